"""
C{--processes N}: one router in several processes.  The twistd process
(the pool, L{txrouter.workers.pool}) binds the listeners and the
subscription sockets and runs N worker processes
(L{txrouter.workers.worker}), each the same router built from the same
configuration, listening on the sockets it inherits.
"""
