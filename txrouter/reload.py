"""
SIGHUP for a router with nodes: its configuration read again (the config
files and the command line), and the ways to find nodes swapped at once.

What can change while running: the static nodes (C{--to}, C{--gracetime},
C{--max-fails}, C{--algo}), the fallbacks (C{--fallback},
C{--fallback-on-no-key}) and the forwarder (C{--use-base},
C{--use-pattern}, C{--use-cache} and C{--cache-file}, C{--use-code},
C{--code-timeout}, C{--name-separator-strip}), unless the subscription
system or a C{--cache-store} is involved (their servers and clients run
as services of their own).  With health checks
(C{--check-interval}), the new nodes are probed from then on, and a node
of both lists keeps what the checks know of it.  The new ones are built
first, then put in place in one step (L{RouterFactory.replaceNodes}): a
request already under way keeps the settings it started with, so it
finishes on its node; the next ones use the new set; listeners and client
connections stay open.  Whatever else changed (listeners, timeouts...)
needs a restart: it is said in one log line (once per change) and
otherwise ignored.  A
configuration that cannot be read or built is refused in one log line,
and the running one is kept.

Without config files, SIGHUP reads the C{--cache-file} mapping again, as
it always did.
"""

import attr
from twisted.logger import Logger

__all__ = ["ConfigReload", "NODE_FIELDS", "FORWARDER_FIELDS"]

log = Logger(namespace="txrouter.reload")

#: The fields that make the forwarder.
FORWARDER_FIELDS = (
    "to", "gracetime", "max_fails", "algo", "use_base", "use_pattern", "use_cache",
    "cache_file", "use_code", "code_timeout", "name_separator_strip",
)

#: The fields a reload changes without a restart.
NODE_FIELDS = FORWARDER_FIELDS + ("fallback", "fallback_on_no_key")


class ConfigReload:
    """
    What SIGHUP does for a router with nodes.

    @ivar config: the configuration running.
    @ivar mapping: the L{txrouter.build.MappingFile} of C{--use-cache}, or
        L{None}.
    @ivar _pending: the options that need a restart, with the values
        already said (each change is said once, not at every reload).
    """

    def __init__(self, service, config, buildNodes, mapping=None, reread=None,
                 checker=None) -> None:
        """
        @param service: the L{txrouter.service.RouterService}.
        @param config: the configuration it was built from.
        @param buildNodes: a callable making, from a configuration and the
            running L{txrouter.routing.health.NodeHealth} (or L{None}), its
            forwarder, its mapping file (or L{None}) and the health of its
            nodes (or L{None}); it raises C{ValueError} for a file that
            cannot be used.
        @param reread: a callable of no argument giving the configuration
            as read now (raising C{ValueError} naming the file and key of
            a mistake), or L{None} when there are no config files.
        @param checker: the L{txrouter.checks.HealthChecker} probing the
            nodes (C{--check-interval}), or L{None}.
        """
        self.service = service
        self.config = config
        self.buildNodes = buildNodes
        self.mapping = mapping
        self.reread = reread
        self._pending = {}
        self.checker = checker

    def __call__(self) -> None:
        if self.reread is None:
            if self.mapping is not None:
                self.mapping.reload()
            return
        try:
            new = self.reread()
        except ValueError as e:
            log.error(
                "config_reload_refused: {error}; keeping the running configuration",
                event="config_reload_refused", error=str(e),
            )
            return
        running = self.config
        changed = [field.name for field in attr.fields(type(running))
                   if _differs(field.name, running, new)]
        allowed = NODE_FIELDS
        if _hasServices(running) or _hasServices(new):
            allowed = ("fallback", "fallback_on_no_key")
        swapped = [name for name in changed if name in allowed]
        restart = [name for name in changed if name not in allowed]
        router = self.service.router
        # The checked nodes are the --to and the --fallback ones.
        checked = router.health is not None and "fallback" in swapped
        # A --use-code is loaded again at each reload: a script's new code
        # is used.
        code = bool(new.use_code) and allowed is NODE_FIELDS
        if code or checked or any(name in FORWARDER_FIELDS for name in swapped):
            try:
                forwarder, mapping, health = self.buildNodes(new, router.health)
            except ValueError as e:
                log.error(
                    "config_reload_refused: {error}; keeping the running configuration",
                    event="config_reload_refused", error=str(e),
                )
                return
        else:
            forwarder, mapping, health = router.forwarder, self.mapping, router.health
            if mapping is not None:
                mapping.reload()
        if swapped or code:
            self.service.replaceNodes(forwarder, new.fallback, new.fallback_on_no_key, health)
            if self.checker is not None:
                self.checker.health = health
            self.mapping = mapping
            taken = swapped + (["use_code"] if code and "use_code" not in swapped else [])
            self.config = attr.evolve(running, **{name: getattr(new, name) for name in taken})
        changes = _options(swapped) + " changed" if swapped else "no node changes"
        if code:
            changes += "; --use-code loaded again"
        log.info(
            "config_reloaded: {changes}", event="config_reloaded", changes=changes,
            options=[_option(name) for name in swapped],
        )
        pending = {name: getattr(new, name) for name in restart}
        unsaid = [name for name in restart
                  if name not in self._pending or self._pending[name] != pending[name]]
        self._pending = pending
        if unsaid:
            log.warn(
                "config_needs_restart: {options} changed; a restart is needed for them,"
                " the running values stay", event="config_needs_restart",
                options=_options(unsaid),
            )


def _hasServices(config) -> bool:
    """
    Whether the forwarder of C{config} runs services of its own, which a
    reload does not start: the subscription servers, the Redis client of
    C{--cache-store}.
    """
    return bool(config.subscription_server or getattr(config, "cache_store", None))


def _differs(name: str, running, new) -> bool:
    """
    Whether the field C{name} differs between the C{running} and the C{new}
    configuration.  A C{use_code} the running one loaded at start (a
    callable) and the new one names (its text) is not told apart: it is
    loaded again anyway.
    """
    old, value = getattr(running, name), getattr(new, name)
    if name == "use_code" and callable(old) and isinstance(value, str):
        return False
    return old != value


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(names) -> str:
    return ", ".join(_option(name) for name in names)
