"""
TLS for the HTTPS and SSL routers: uWSGI's options, safe contexts, SNI,
handshake deadlines and client-certificate vars, one job per module:

  - L{specs}: C{--https}, C{--https2}, C{--sslrouter}, C{--sslrouter2},
    C{--sni}, C{--sni-regexp} parsed into frozen values;
  - L{names}: the check every SNI name passes before it is used;
  - L{credentials}: certificate, key and CA files read once and checked;
  - L{contexts}: an OpenSSL context with the safe defaults;
  - L{directory}: C{--sni-dir} and the subscribers' files, only inside
    their directory;
  - L{sni}: which context serves an SNI name, in uWSGI's order, cached and
    reloadable; L{sni.serverNameOf} for the routing key;
  - L{listener}: one listener's contexts, its session-ticket key rotated;
  - L{handshake}: Twisted's TLS factory with a handshake deadline, a
    log line per failed handshake, and a 400 for plain HTTP;
  - L{clientcert}: C{HTTPS}, C{HTTPS_DN}, C{HTTPS_CLIENT_CERTIFICATE},
    C{HTTPS_CC}.

docs/https-router.md describes the options and the divergences from
uWSGI.
"""
