"""The queue and its rules: admission, priorities, quotas, retries, dependencies, dispatch. No
HTTP and no `ray`: Ray is reached through the backend."""
