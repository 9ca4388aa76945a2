"""
The bounds every router shares, in one place.
"""

#: Longest routing key, as in uWSGI (its key fields carry 8-bit lengths).
MAX_KEY_LENGTH = 255

#: Client bytes held while a node is being connected before the client is
#: paused.
PENDING_LIMIT = 65536

#: After a refusal, seconds without client bytes, and seconds in all, the
#: rest of a request body is read and dropped for (nginx's
#: C{lingering_timeout} and C{lingering_time}).
LINGER_IDLE = 5.0
LINGER_TOTAL = 30.0
