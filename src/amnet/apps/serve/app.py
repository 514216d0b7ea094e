"""HTTP API and web demo: ``create_app(predictor, config)`` builds a FastAPI app, ``run`` serves it
with uvicorn. Needs the ``serve`` extra (``pip install 'amnet[serve]'``).

Requests are decoded in a thread pool and their images queued for one model thread, which
scores whatever has arrived together as one batch: the event loop never runs the model. Every
limit answers with a JSON body ``{"error": code, "message": text}``; defaults are in ServeConfig.
"""

import asyncio
import contextlib
import inspect
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

if TYPE_CHECKING:  # torch and PIL are imported when an app is built, so the CLI starts fast
    from amnet.inference.predictor import Predictor

MB = 1 << 20


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the HTTP service; each field is an ``amnet serve`` option."""

    max_file_bytes: int = _opt(20 * MB, "one uploaded file; larger: 413 file_too_large")
    max_request_bytes: int = _opt(100 * MB, "a request body; larger: 413 request_too_large")
    max_files: int = _opt(16, "files in one request; more: 422 too_many_files")
    max_pixels: int = _opt(100_000_000, "width x height of one image; more: 413 too_many_pixels")
    max_queue: int = _opt(64, "images admitted, not yet answered; more: 503 busy + Retry-After")
    timeout_s: float = _opt(60.0, "seconds for one request (decode, queue, model): 504 timeout")
    max_batch: int = _opt(16, "images per model call")
    batch_wait_ms: float = _opt(5.0, "how long a batch waits for images arriving together")
    decode_workers: int = _opt(2, "threads decoding uploads (the model has its own thread)")
    map_size: int = _opt(384, "longest side of the ?maps=true overlays, pixels")
    retry_after_s: int = _opt(2, "the Retry-After header of a 503, seconds")

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0 and f.name != "batch_wait_ms":
                raise ValueError(f"ServeConfig.{f.name} must be positive")
        if self.batch_wait_ms < 0:
            raise ValueError("ServeConfig.batch_wait_ms must be >= 0")
        if self.max_file_bytes > self.max_request_bytes:
            raise ValueError("ServeConfig.max_file_bytes must be <= max_request_bytes")


def create_app(predictor: "Predictor", config: ServeConfig | None = None):
    """The FastAPI app: ``POST /v1/predict``, ``GET /v1/models``, ``GET /healthz``, the page
    at ``/``, OpenAPI docs at ``/docs``."""
    from fastapi import FastAPI, File, Query, Request, UploadFile
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from amnet import __version__
    from amnet.apps.serve.batcher import Batcher
    from amnet.apps.serve.io import ApiError, BodyLimit, Decoded, decode, overlay_pngs, signed_png
    from amnet.apps.serve.schema import ErrorBody, ModelInfo, PredictResponse, Result

    cfg = config or ServeConfig()
    meta = predictor.meta
    name = str(meta.get("name", "custom"))
    name = Path(name).name if name.endswith(".safetensors") else name  # never the server's path
    decode_pool = ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="amnet-decode")
    batcher = Batcher(predictor.predict_tensors, cfg.max_batch, cfg.batch_wait_ms / 1000)
    admitted = [0]  # images admitted and not yet answered (the bounded queue)
    # ?score_map=true: a backward pass per image, one at a time in its own thread
    grad_pool = ThreadPoolExecutor(1, thread_name_prefix="amnet-grad")
    module = predictor.as_module() if predictor.trunk is not None else None
    static = resources.files("amnet.apps.serve") / "static"

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        await batcher.stop()
        grad_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="amnet",
        version=__version__,
        lifespan=lifespan,
        description="Image memorability (AMNet) HTTP API. Limits: "
        + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()),
    )
    app.add_middleware(BodyLimit, limit=cfg.max_request_bytes)
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    errors: dict = {s: {"model": ErrorBody} for s in (400, 413, 422, 503, 504)}

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.code, "message": e.message}, e.status, e.headers)

    @app.exception_handler(StarletteHTTPException)  # 400 unparsable body, 404, 405, ...
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(e.status_code).phrase.lower().replace(" ", "_")
        return JSONResponse({"error": code, "message": str(e.detail)}, e.status_code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = jsonable_encoder(e.errors())
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errs)
        return JSONResponse({"error": "invalid_request", "message": msg, "detail": errs}, 422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        csp = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'"
        return HTMLResponse(
            (static / "index.html").read_text(), headers={"Content-Security-Policy": csp}
        )

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "model": name, "queued": admitted[0], **batcher.stats()}

    @app.get("/v1/models", response_model=list[ModelInfo])
    async def models() -> list[ModelInfo]:
        return [
            ModelInfo(
                name=name,
                trunk=str(meta.get("trunk", "")),
                steps=int(meta.get("model", {}).get("steps", 0)),
                input_size=predictor.preprocess.size,
                amnet_version=str(meta.get("amnet_version", __version__)),
                metrics=meta.get("metrics", {}),
                training=meta.get("training", {}),
                limits=asdict(cfg),
            )
        ]

    def whole_score_map(tensor):
        from amnet.inference.maps import input_score_map

        return input_score_map(module, tensor)

    async def score(files: list[UploadFile], maps: bool, score_map: bool) -> list[Result]:
        loop = asyncio.get_running_loop()

        def read(f: UploadFile) -> bytes:
            f.file.seek(0)
            return f.file.read(cfg.max_file_bytes + 1)

        def job(f: UploadFile):
            return decode(read(f), f.filename or "", predictor.preprocess, cfg, maps)

        decoded = await asyncio.gather(*(loop.run_in_executor(decode_pool, job, f) for f in files))
        ok = [d for d in decoded if isinstance(d, Decoded)]
        preds = await asyncio.gather(*(batcher.submit(d.tensor) for d in ok))
        by_id = {id(d): p for d, p in zip(ok, preds, strict=True)}
        results = []
        for f, d in zip(files, decoded, strict=True):
            fn = f.filename or ""
            if not isinstance(d, Decoded):
                results.append(Result(filename=fn, error=d))
                continue
            p = by_id[id(d)]
            png = (
                await loop.run_in_executor(decode_pool, overlay_pngs, d.thumb, p.attention)
                if maps
                else None
            )
            smap = (
                await loop.run_in_executor(grad_pool, whole_score_map, d.tensor)
                if score_map
                else None
            )
            spng = (
                await loop.run_in_executor(decode_pool, signed_png, d.thumb, smap)
                if maps and smap is not None
                else None
            )
            results.append(
                Result(
                    filename=fn,
                    score=p.score,
                    step_scores=list(p.step_scores),
                    attention=p.attention.tolist(),
                    width=d.size[0],
                    height=d.size[1],
                    maps=png,
                    score_map=None if smap is None else smap.tolist(),
                    score_map_png=spng,
                )
            )
        return results

    @app.post("/v1/predict", response_model=PredictResponse, responses=errors)
    async def predict(
        files: Annotated[
            list[UploadFile],
            File(
                description=f"one or more images, at most {cfg.max_files} (more: 422)",
                min_length=1,
                json_schema_extra={"maxItems": cfg.max_files},  # enforced below (our JSON error)
            ),
        ],
        maps: Annotated[bool, Query(description="add per-step overlay PNGs (data URLs)")] = False,
        score_map: Annotated[
            bool,
            Query(description="add the whole score's sensitivity map (a backward pass: slower)"),
        ] = False,
    ) -> PredictResponse:
        if score_map and module is None:
            raise ApiError(422, "no_score_map", "this model (an ONNX file) has no whole-score map; "
                           "serve its .safetensors checkpoint")  # fmt: skip
        if len(files) > cfg.max_files:
            raise ApiError(
                422, "too_many_files", f"{len(files)} files; at most {cfg.max_files} per request"
            )
        for f in files:
            if f.size is not None and f.size > cfg.max_file_bytes:
                raise ApiError(
                    413, "file_too_large", f"{f.filename}: larger than {cfg.max_file_bytes:,} bytes"
                )
        if admitted[0] + len(files) > cfg.max_queue:
            raise ApiError(
                503,
                "busy",
                f"the queue is full ({admitted[0]} images waiting); retry in {cfg.retry_after_s} s",
                {"Retry-After": str(cfg.retry_after_s)},
            )
        admitted[0] += len(files)
        try:
            results = await asyncio.wait_for(score(files, maps, score_map), cfg.timeout_s)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            raise ApiError(504, "timeout", f"not scored within {cfg.timeout_s:g} s") from None
        finally:
            admitted[0] -= len(files)
        return PredictResponse(model=name, results=results)

    return app


def app_from_env():
    """uvicorn factory for ``--workers N``: each worker process loads the model itself and
    gets an equal share of the CPU threads."""
    import torch

    from amnet.inference.predictor import Predictor

    spec = json.loads(os.environ["AMNET_SERVE"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec["workers"]))
    predictor = Predictor.from_checkpoint(spec["model"], device=spec["device"])
    return create_app(predictor, ServeConfig(**spec["config"]))


def run(
    model: str = "default",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    device: str = "cpu",
    config: ServeConfig | None = None,
) -> None:
    """Serve ``model`` (registry name or checkpoint path) until interrupted."""
    import uvicorn

    from amnet.inference.predictor import Predictor

    cfg = config or ServeConfig()
    if workers == 1:
        app = create_app(Predictor.from_checkpoint(model, device=device), cfg)
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    from amnet.checkpoint import resolve_model

    resolve_model(model)  # fail here, once, on a wrong name
    spec = {"model": model, "device": device, "workers": workers, "config": asdict(cfg)}
    os.environ["AMNET_SERVE"] = json.dumps(spec)
    extra = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        extra["timeout_worker_healthcheck"] = 600  # a worker loading ResNet-152 needs > 5 s
    uvicorn.run("amnet.apps.serve.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, **extra)  # fmt: skip
