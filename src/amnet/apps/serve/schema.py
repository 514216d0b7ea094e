"""The HTTP API's JSON bodies (pydantic models, so they appear in the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Result(BaseModel):
    """One uploaded file, in upload order. ``error`` is null when it was scored."""

    filename: str
    score: float | None = Field(None, description="memorability, 0 (forgettable)..1 (memorable)")
    step_scores: list[float] = Field(default_factory=list, description="score after each step")
    attention: list[list[list[float]]] = Field(
        default_factory=list, description="T maps of H x W weights, each summing to 1"
    )
    width: int | None = Field(None, description="of the original image, pixels")
    height: int | None = None
    error: str | None = Field(None, description="why this file was not scored")
    maps: list[str] | None = Field(
        None, description="with ?maps=true: one overlay per step, as data:image/png;base64 URLs"
    )
    score_map: list[list[float]] | None = Field(
        None,
        description="with ?score_map=true: the whole score's sensitivity (heads and prior), "
        "h x w: how much the score drops, to first order, when each cell is greyed out",
    )
    score_map_png: str | None = Field(
        None, description="with ?score_map=true&maps=true: that map as an overlay (red raises "
        "the score, blue lowers it), a data:image/png;base64 URL",
    )  # fmt: skip


class PredictResponse(BaseModel):
    model: str
    results: list[Result]


class ErrorBody(BaseModel):
    """Every request-level error: a stable code and a sentence for people."""

    error: str = Field(
        description="file_too_large, request_too_large, too_many_pixels, too_many_files, "
        "invalid_request, no_score_map, busy, timeout, bad_request, ..."
    )
    message: str
    detail: list | None = Field(None, description="422 invalid_request only: each field's error")


class ModelInfo(BaseModel):
    name: str
    trunk: str
    steps: int
    input_size: int
    amnet_version: str
    metrics: dict
    training: dict
    limits: dict
