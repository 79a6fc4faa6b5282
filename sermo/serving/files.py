"""The audio files a ``sermo predict`` command line names: files as given, folders scanned."""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")


def audio_files(inputs: list[str]) -> list[Path]:
    """Files named, and the audio files inside folders named (recursively, sorted). What a
    folder scan cannot enter or follow (a folder without permission, a broken link or a loop
    named like audio) is a warning naming it; a named file is returned as it is (reading it
    reports what is wrong with it)."""
    import os
    import warnings

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        try:
            is_dir = p.is_dir()
        except OSError:  # inside a folder this user may not enter: reading it says so
            is_dir = False
        if not is_dir:
            out.append(p)
            continue
        if not os.access(p, os.R_OK | os.X_OK):
            warnings.warn(f"{p}: permission denied; its files are not read", stacklevel=2)
            continue

        def refused(exc: OSError) -> None:
            warnings.warn(f"{exc.filename}: {exc.strerror or exc}; its files are not read", stacklevel=3)

        found = []
        for folder, _, names in os.walk(p, onerror=refused, followlinks=False):
            for name in names:
                f = Path(folder) / name
                if f.suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                if f.is_file():
                    found.append(f)
                elif f.is_symlink():
                    warnings.warn(f"{f}: a broken symbolic link or a loop; skipped", stacklevel=2)
        out += sorted(found)
    return out
