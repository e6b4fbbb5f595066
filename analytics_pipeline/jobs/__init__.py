"""Jobs: the per-client asset jobs the sensors launch, and the deprovisioning op job."""
