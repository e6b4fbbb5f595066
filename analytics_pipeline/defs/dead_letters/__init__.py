"""Dead letters: reprocessing `shared_dead_letter` (replay, park or defer each letter)."""
