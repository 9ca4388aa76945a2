"""Command-line front ends: usage.Options and makeService for each router."""
