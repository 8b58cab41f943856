"""Privacy: accounting of DP releases and the workspace's consent policy."""
