"""The `dupwatch` command line: commands apart from the code they drive."""
