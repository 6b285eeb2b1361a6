"""
Piano-roll pictures and MIDI files from binary piano rolls ``[T, 88]`` (column ``j`` is MIDI pitch
``21 + j``, A0 .. C8).
"""

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = ["MIN_NOTE", "piano_roll_png", "write_midi"]

#: MIDI pitch of column 0.
MIN_NOTE = 21

PathLike = Union[str, os.PathLike]


def _as_roll(roll, threshold: float = 0.5) -> np.ndarray:
    """``roll`` (tensor or array ``[T, P]``) as a bool numpy array."""
    if hasattr(roll, "detach"):
        roll = roll.detach().cpu().numpy()
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"a piano roll must have shape [time, pitches], got {roll.shape}")
    if roll.dtype == bool:
        return roll
    if not np.all(np.isfinite(roll)):
        raise ValueError("piano roll contains NaN or inf values")
    return roll >= threshold


def piano_roll_png(
    roll,
    path: PathLike,
    title: Optional[str] = None,
    min_note: int = MIN_NOTE,
    seconds_per_step: Optional[float] = None,
) -> Path:
    """
    Save a piano roll as a PNG picture, time on the x axis and MIDI pitch on the y axis
    (low notes at the bottom).

    :param roll: ``[T, 88]`` array or tensor; values >= 0.5 count as a sounding note (float values
        are drawn in grey levels if not binary).
    :param path: output ``.png`` file (parent directories are created).
    :param str title: figure title.
    :param int min_note: MIDI pitch of column 0.
    :param float seconds_per_step: label the x axis in seconds instead of steps.
    :returns: the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if hasattr(roll, "detach"):
        roll = roll.detach().cpu().numpy()
    roll = np.asarray(roll, dtype=np.float32)
    if roll.ndim != 2:
        raise ValueError(f"a piano roll must have shape [time, pitches], got {roll.shape}")
    num_steps, num_pitches = roll.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 1.0 if seconds_per_step is None else float(seconds_per_step)
    fig, ax = plt.subplots(figsize=(max(4.0, min(16.0, num_steps / 12.0)), 4.0))
    try:
        ax.imshow(
            roll.T,  # [pitches, T]
            origin="lower",
            aspect="auto",
            cmap="Greys",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            extent=(0.0, num_steps * scale, min_note - 0.5, min_note + num_pitches - 0.5),
        )
        ax.set_xlabel("time (s)" if seconds_per_step is not None else "time step")
        ax.set_ylabel("MIDI pitch")
        # Cs as pitch landmarks: C1 = 24, ..., C8 = 108
        c_notes = [p for p in range(min_note, min_note + num_pitches) if p % 12 == 0]
        ax.set_yticks(c_notes)
        ax.set_yticklabels([f"C{p // 12 - 1}" for p in c_notes])
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def write_midi(
    roll,
    path: PathLike,
    seconds_per_step: float = 0.25,
    velocity: int = 80,
    min_note: int = MIN_NOTE,
    program: int = 0,
    ticks_per_beat: int = 480,
    tempo: int = 500000,
) -> Path:
    """
    Write a binary piano roll as a one-track MIDI file: a note starts (note_on) at the first step
    it is active and stops (note_off) at the first step it is no longer active; notes still
    sounding at the end stop after the last step.

    :param roll: ``[T, 88]`` array or tensor; values >= 0.5 count as a sounding note.
    :param path: output ``.mid`` file (parent directories are created).
    :param float seconds_per_step: duration of one time step.
    :param int velocity: note-on velocity (1..127).
    :param int min_note: MIDI pitch of column 0.
    :param int program: General MIDI program (0 = acoustic grand piano).
    :param int ticks_per_beat: MIDI resolution.
    :param int tempo: microseconds per beat.
    :returns: the path written.
    """
    import mido

    if not 1 <= int(velocity) <= 127:
        raise ValueError(f"velocity must be in 1..127, got {velocity}")
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    active = _as_roll(roll)  # [T, P] bool
    num_steps, num_pitches = active.shape
    if min_note < 0 or min_note + num_pitches > 128:
        raise ValueError(f"pitches {min_note}..{min_note + num_pitches - 1} are outside MIDI's 0..127")
    ticks_per_step = mido.second2tick(seconds_per_step, ticks_per_beat, tempo)

    # padded with silence on both sides so every onset and release is a change
    padded = np.zeros((num_steps + 2, num_pitches), dtype=np.int8)  # [T + 2, P]
    padded[1:-1] = active
    change = np.diff(padded, axis=0)  # [T + 1, P]: +1 onset at step t, -1 release at step t
    events = []  # (tick, order, message type, pitch): note_off before note_on at the same tick
    for t, p in zip(*np.nonzero(change)):
        tick = int(round(t * ticks_per_step))
        kind = "note_on" if change[t, p] > 0 else "note_off"
        events.append((tick, 0 if kind == "note_off" else 1, kind, int(p) + min_note))
    events.sort()

    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    track.append(mido.Message("program_change", program=int(program), channel=0, time=0))
    now = 0
    for tick, _, kind, pitch in events:
        vel = int(velocity) if kind == "note_on" else 0
        track.append(mido.Message(kind, note=pitch, velocity=vel, channel=0, time=tick - now))
        now = tick
    end = int(round(num_steps * ticks_per_step))
    track.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(str(path))
    return path
