"""POSIX primitives done right for a library that lives in someone else's process: an fd shared
by threads, SIGINT deferred over a window, writing all of a buffer, signalling a process that may be gone."""
