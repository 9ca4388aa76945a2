"""
Reading a node's HTTP response on behalf of a client request: what the
HTTP/1 exchange (L{txrouter.routers.exchange}) and the HTTP/2 stream
(L{txrouter.routers.h2stream}) share.

The head comes first; then a body framed by its length (surplus bytes
dropped and warned about), by chunks, or by the node's close; and a node
that sends something malformed, or stops short, gets one warning naming
it.  What differs between the two (how the head goes to the client, how
chunks are relayed, how a request is refused or cut) is left to them.
"""

from twisted.logger import Logger

from txrouter.wire.http1 import HTTPError, ResponseHeadParser

__all__ = ["NodeResponseReader"]


class NodeResponseReader:
    """
    The response half of an L{txrouter.lifecycle.IFrontEnd} speaking HTTP
    to its client.

    A subclass has a C{lifecycle} and a C{router}, and gives:
      - C{_responseHead(data)}: feed the head (L{_finalHead} reads it);
        the body bytes after it once complete (L{None} until then, or if
        the response was refused);
      - C{_interimHead(resp)}: what becomes of a node's interim (1xx) head;
      - C{_chunkedBody(data)}: relay bytes of a chunked body;
      - C{_toClient(data, last=False)}: relay body bytes, C{last} when they
        end the response;
      - C{_complete()}: the response is over;
      - C{refuse(status, event, detail)}: answer the client with an error;
      - C{_cut(event)}: end the request cutting both connections, with its
        access log line.

    @cvar log: the subclass's logger (its router's namespace).
    @cvar headParser: the class of its response head parser.
    """

    log = Logger(namespace="txrouter.http")
    headParser = ResponseHeadParser
    _respParser = None
    status = 0
    _framing = None
    _respRemaining = 0
    _bodySent = 0
    # The HTTP node's connection may carry another request once this
    # response is read to its end.
    _nodeReusable = False

    def _startResponse(self) -> None:
        """
        Get ready to read the node's response head.
        """
        self._respParser = self.headParser(self.router.maxResponseHeadSize)

    def _finalHead(self, data: bytes):
        """
        Feed the node's response head.  Each interim head before the final
        one (a 1xx but 101) goes to C{_interimHead} and the next is read,
        in a loop, not a recursion: a node may send thousands in one read.

        @return: the final head (the body bytes after it are the parser's
            C{leftover}), or L{None} until it is complete or if it is bad
            (then refused).
        """
        while True:
            parser = self._respParser
            try:
                resp = parser.feed(data)
            except HTTPError as e:
                self._badResponse(e.detail, e.event)
                return None
            if resp is None:
                return None
            status = resp.status
            if status >= 200 or status == 101:
                return resp
            self._interimHead(resp)
            data = parser.leftover
            self._startResponse()
            if not data:
                return None

    def responseReceived(self, data: bytes) -> None:
        if self._framing is None:
            data = self._responseHead(data)
            if data is None or self.lifecycle.finished:
                return
        framing = self._framing
        if framing == "length":
            remaining = self._respRemaining
            if len(data) < remaining:
                self._respRemaining = remaining - len(data)
                self._toClient(data)
                return
            if len(data) > remaining:
                self._surplus(len(data) - remaining)
                data = data[:remaining]
            self._respRemaining = 0
            self._toClient(data, True)
            self._complete()
        elif framing == "chunked":
            self._chunkedBody(data)
        else:
            self._closeDelimitedBody(data)

    def _closeDelimitedBody(self, data: bytes) -> None:
        """
        Bytes of a body the node's close ends: relayed as they come.
        """
        self._toClient(data)

    def _surplus(self, count: int) -> None:
        self.log.warn(
            "response_surplus: {node} sent {count} bytes past the end of its response;"
            " dropped",
            event="response_surplus", node=self.lifecycle.node.name, count=count,
        )
        self._nodeReusable = False

    def _badResponse(self, detail: str, event: str = "bad_response") -> None:
        """
        Refuse a response the client must not get (502), naming the node
        and what is wrong with it in a warning.
        """
        self.log.warn(
            "{event}: from {node}: {detail}",
            event=event, node=self.lifecycle.node.name, detail=detail,
        )
        self.refuse(502, event, "the backend sent an invalid response")

    def _truncated(self, detail: str) -> None:
        self.log.warn(
            "response_truncated: from {node}: {detail}",
            event="response_truncated", node=self.lifecycle.node.name, detail=detail,
        )
        self._cut("response_truncated")

    def logAccess(self, status: int, size: int, event: "str | None" = None) -> None:
        self.lifecycle.logAccess(self.head, status, size, event)
