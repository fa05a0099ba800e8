"""Measure and describe a person's recording the way the training text was made, for the chat's system text.

:func:`read_findings` runs the pipeline's own stages on one recording: ``ecglm measure``'s delineation
(:func:`ecglm.data.delineate.measure_record`: heart rate, PR, QRS, QT, axes, per-lead amplitudes) and
``ecglm describe``'s guideline rules (:func:`ecglm.text.describe.describe`), so the model sees its findings in
the words its training dialogues used. Leads that were not recorded are measured as absent (flat) and named
nowhere. A recording the delineation cannot measure (noise, too few beats) still gets a chat: the reason is
kept and the system text says the findings are unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecglm.chat.recording import Recording

#: The measurements the chat shows, in order: (12SL column, label, unit).
SHOWN = (
    ("HR__Global", "heart rate", "bpm"),
    ("PR_Int_Global", "PR", "ms"),
    ("QRS_Dur_Global", "QRS", "ms"),
    ("QT_Int_Global", "QT", "ms"),
    ("QT_IntBazett_Global", "QTc (Bazett)", "ms"),
    ("R_AxisFrontal_Global", "QRS axis", "°"),
)


@dataclass(frozen=True)
class Findings:
    """What was measured (12SL names; None where a measure could not be made) and the guideline findings."""

    measurements: dict[str, float | None] = field(default_factory=dict)
    general: str | None = None
    leads: dict[str, str | None] = field(default_factory=dict)  # recorded leads only
    failure: str | None = None  # why the recording could not be measured (then nothing else is set)
    seconds: float = 0.0  # the window measured
    fs: float = 0.0

    @property
    def heart_rate(self) -> float | None:
        return self.measurements.get("HR__Global")

    def summary(self) -> str:
        """Lines for a person: the measured intervals, then the findings in general and per lead."""
        if self.failure:
            return f"Could not measure this recording: {self.failure}."
        shown = [f"{label} {value:.0f} {unit}".replace(" °", "°") for key, label, unit in SHOWN
                 if (value := self.measurements.get(key)) is not None]  # fmt: skip
        lines = [f"Measured ({self.seconds:g} s at {self.fs:g} Hz): " + (", ".join(shown) or "nothing") + "."]
        lines.append(f"Findings in general: {self.general or 'none'}.")
        for lead, text in self.leads.items():
            if text:
                lines.append(f"  lead {lead}: {text}")
        if not any(self.leads.values()):
            lines.append(f"  no finding in lead(s) {', '.join(self.leads)}")
        return "\n".join(lines)


def read_findings(recording: Recording, *, sex: str | None = None, age: float | None = None, seconds: float = 10.0,
                  guidelines: str | Path | None = None) -> Findings:  # fmt: skip
    """Measure the first ``seconds`` of ``recording`` at its own rate and apply the guideline rules."""
    import polars as pl

    from ecglm.data.delineate import DelineationError, measure_record
    from ecglm.text.describe import describe
    from ecglm.text.guidelines import DEFAULT_GUIDELINES, load_guidelines

    window = recording.window(seconds)
    try:
        values = measure_record(window.signal_mv, window.fs)
    except DelineationError as err:
        return Findings(failure=str(err), seconds=window.seconds, fs=window.fs)
    rules = load_guidelines(guidelines or DEFAULT_GUIDELINES)
    features = pl.DataFrame([{"ecg_id": 0, **values}], schema={"ecg_id": pl.Int64, **{k: pl.Float64 for k in values}})
    patients = pl.DataFrame({"ecg_id": [0], "sex": [sex], "age": [age]},
                            schema={"ecg_id": pl.Int64, "sex": pl.String, "age": pl.Float64})  # fmt: skip
    row: dict[str, Any] = describe(features, patients, rules, source=window.source).row(0, named=True)
    leads = {lead: row[f"lead_{lead}"] for lead in window.leads}
    return Findings(values, row["general"], leads, None, window.seconds, window.fs)
