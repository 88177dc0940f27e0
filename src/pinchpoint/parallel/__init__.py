"""Process launch, process groups and parallel wiring."""
