"""Ray: the connection, the local head, the dispatcher actor and one attempt of a job on a node
(process group, containment, the job's user and environment). The only layer that imports `ray`."""
