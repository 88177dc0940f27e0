"""Full-scale pre-flight: parameter counts, memory per device, communication volume, step time.
Pure arithmetic over typed config; nothing here allocates tensors or touches a device."""
