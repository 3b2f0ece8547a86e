"""Live key sources: the current key of an env variable, a file or a command.

`current` never blocks and never does I/O. Files are watched and commands re-run by background
tasks on mitmproxy's event loop (commands as asyncio subprocesses), so no request ever waits
for either, except the first requests after start while a command's first run is under way.
A source that fails keeps its last good key and logs why, never the value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from addon.config.key_sources import CommandSource, EnvSource, FileSource, KeySource
from addon.keys.ids import clean_key, key_id

logger = logging.getLogger(__name__)

FILE_POLL = 1.0  # seconds between checks of a watched file
COMMAND_RETRY = 5.0  # seconds before re-running a command that failed (capped by refresh)

Stamp = tuple[int, int, int] | None


class KnownValues:
    """Every key value this process has held, with its placeholder, for redaction: kept for the
    life of the process, as a flow in flight (or saved at shutdown) may carry a key that a
    rotation or a reload has since dropped (an env source is rebuilt at every reload; a pool
    member, a tenant table or a provider may be removed). `version` moves whenever a value is
    first seen: `KeyStore.secrets()` keeps its answer until then, as redaction asks per flow.

    Each rotation adds a value (a few dozen bytes, and one more search per masked field)."""

    version = 0
    held: ClassVar[dict[str, str]] = {}  # value -> placeholder

    @classmethod
    def remember(cls, value: str, placeholder: str) -> None:
        if cls.held.get(value) != placeholder:
            cls.held[value] = placeholder
            cls.version += 1


def file_stamp(path: Path) -> Stamp:
    """What changes when a file is replaced or rewritten (Kubernetes swaps a symlink: the
    inode changes; an editor may keep size and second)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class FileWatch:
    """Calls `changed()` from a background task whenever `path`'s stamp changes."""

    def __init__(self, path: Path, changed: Callable[[], None]) -> None:
        self.path, self._changed = path, changed
        self.stamp: Stamp = file_stamp(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL)
            stamp = file_stamp(self.path)
            if stamp != self.stamp:
                self.stamp = stamp
                try:
                    self._changed()
                except Exception:
                    logger.exception("keyrelay: keys: reloading %s failed", self.path.name)


class LiveKey:
    """One source's current key (the values it had before: KnownValues, for redaction)."""

    def __init__(self, source: KeySource, label: str) -> None:
        self.source = source
        self.label = label  # "openai" or "openai pool key 2": what logs name
        self.value: str | None = None

    @property
    def placeholder(self) -> str:
        return self.source.placeholder()

    def failed(self, what: str, reason: str) -> None:
        """A read that gave no key: logged, never with the value; the last good key stays.

        A warning while there is no key yet: mitmdump exits when an error is logged during
        start-up, and one provider without its key must not stop the others."""
        kept = "keeping the previous key" if self.value else "no key yet"
        level = logging.ERROR if self.value else logging.WARNING
        logger.log(level, "keyrelay: %s: %s %s (%s)", self.label, what, reason, kept)

    def start(self) -> None:
        """Begin background work; needs the running event loop; idempotent."""

    def stop(self) -> None:
        pass

    async def ready(self) -> str | None:
        """The key, waiting only while a first load is still under way."""
        return self.value

    def _accept(self, raw: str | None, what: str) -> bool:
        """Take a newly read value; a bad one keeps the last good key. True if accepted."""
        value = clean_key(raw) if raw is not None else None
        if value is None:
            self.failed(what, "gave no usable key")
            return False
        if value != self.value:
            if self.value is not None:
                logger.info(
                    "keyrelay: %s: new key from %s (key id %s -> %s)",
                    self.label,
                    what,
                    key_id(self.value),
                    key_id(value),
                )
            self.value = value
            KnownValues.remember(value, self.placeholder)
        return True


class EnvKey(LiveKey):
    def __init__(self, source: EnvSource, label: str, env: dict[str, str]) -> None:
        super().__init__(source, label)
        raw = source.read(env)
        if raw is not None:
            self._accept(raw, source.describe())


class FileKey(LiveKey):
    """Read at start, then again whenever the file changes."""

    def __init__(self, source: FileSource, label: str) -> None:
        super().__init__(source, label)
        self.path = source.file
        self._watch = FileWatch(self.path, self.reload)
        self.reload()

    def reload(self) -> None:
        try:
            raw = self.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            self.failed(str(self.path), f"cannot be read: {reason}")
            return
        self._accept(raw, f"{self.path}")

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()


class CommandKey(LiveKey):
    """Runs the command at start and every `refresh` seconds; its standard output is the key."""

    def __init__(self, source: CommandSource, label: str) -> None:
        super().__init__(source, label)
        self.spec = source
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Event | None = None

    def start(self) -> None:
        if self._task is None:
            self._first = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def ready(self) -> str | None:
        if self.value is None:
            self.start()
            assert self._first is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), self.spec.timeout + 1)
        return self.value

    async def _run(self) -> None:
        assert self._first is not None
        while True:
            ok = await self.run_once()
            self._first.set()
            await asyncio.sleep(self.spec.refresh if ok else min(COMMAND_RETRY, self.spec.refresh))

    async def run_once(self) -> bool:
        name = Path(self.spec.command[0]).name
        what = f"the command {name}"
        try:
            process = await asyncio.create_subprocess_exec(
                *self.spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,  # may echo secrets: never read or logged
                start_new_session=True,
            )
        except OSError as e:
            self.failed(what, f"cannot be started: {e.strerror}")
            return False
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self.spec.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self.failed(what, f"took longer than {self.spec.timeout:g}s")
            return False
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if process.returncode != 0:
            self.failed(what, f"exited with status {process.returncode}")
            return False
        return self._accept(out.decode("utf-8", "replace"), what)


def live_key(source: KeySource, label: str, env: dict[str, str]) -> LiveKey:
    if isinstance(source, EnvSource):
        return EnvKey(source, label, env)
    if isinstance(source, FileSource):
        return FileKey(source, label)
    return CommandKey(source, label)
