"""Read-side views over the catalog: status, duplicate groups, query by image."""
