"""
The subscription system: signing (L{txrouter.subscription.signing}); the
server, client and federation build on L{txrouter.wire.subscription}.
"""
