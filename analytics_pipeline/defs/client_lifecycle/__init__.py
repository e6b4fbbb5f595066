"""Client lifecycle: provisioning, schema migrations and deprovisioning of each client."""
