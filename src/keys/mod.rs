//! API keys, quotas and usage in sled (issue 4).
