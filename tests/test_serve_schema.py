"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis, a few examples per operation): no
input gives a 5xx, and every response matches the schema (status codes, bodies, content types)."""

from __future__ import annotations

import schemathesis
import torch
from conftest import TINY_CFG, _tiny_spec
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from amnet.apps.serve.app import ServeConfig, create_app
from amnet.inference.predictor import Predictor
from amnet.model.head import AMNetHead
from amnet.trunks.registry import create_trunk


def _app():
    # Built at import (schemathesis reads the schema at collection), without a checkpoint file.
    spec = _tiny_spec()
    torch.manual_seed(0)
    predictor = Predictor(create_trunk(spec.name), AMNetHead(TINY_CFG).eval(), spec.preprocess,
                          meta={"name": "tiny", "trunk": spec.name}, workers=0)  # fmt: skip
    cfg = ServeConfig(max_files=4, max_file_bytes=1 << 20, max_request_bytes=4 << 20)
    return create_app(predictor, cfg)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_follows_its_schema(case):
    # All default checks except one: in multipart, a file "of the wrong type" (an integer) is
    # just bytes, so the server rightly answers 200 with a per-file "not an image" error.
    response = case.call_and_validate(excluded_checks=[negative_data_rejection])
    assert response.status_code < 500
