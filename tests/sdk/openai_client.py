"""The official OpenAI Python SDK against the Axon gateway.

Run by tests/tests/openai_sdk.rs with: GATEWAY_URL, GATEWAY_KEY (a client API key),
GATEWAY_CA (the CA certificate to trust), LIMITED_KEY (a key allowed one request a minute).
Each check prints one line; any failure raises, so the exit status is non-zero.
"""

import base64
import os

import openai

http = openai.DefaultHttpx2Client(verify=os.environ["GATEWAY_CA"])
client = openai.OpenAI(
    base_url=os.environ["GATEWAY_URL"] + "/v1",
    api_key=os.environ["GATEWAY_KEY"],
    http_client=http,
    max_retries=0,
)


def check(name, ok, detail=""):
    if not ok:
        raise SystemExit(f"FAIL {name}: {detail}")
    print(f"ok {name}")


answer = client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "hello sdk"}],
)
check("chat", answer.choices[0].message.content == "mock:gpt-4o-mini:hello sdk", answer)
check("chat usage", answer.usage is not None and answer.usage.total_tokens > 0, answer.usage)

pieces = []
usage = None
stream = client.chat.completions.create(
    model="smart",
    messages=[{"role": "user", "content": "stream this please"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
check("stream", "".join(pieces) == "mock:gpt-4o-mini:stream this please", pieces)
check("stream usage", usage is not None and usage.completion_tokens > 0, usage)

tools = client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "weather in Lima"}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}],
)
calls = tools.choices[0].message.tool_calls or []
check("tools", len(calls) == 1 and calls[0].function.name == "get_weather", tools)

streamed_calls = {}
for chunk in client.chat.completions.create(
    model="openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "weather in Quito"}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    stream=True,
):
    for choice in chunk.choices:
        for call in choice.delta.tool_calls or []:
            entry = streamed_calls.setdefault(call.index, {"name": "", "arguments": ""})
            if call.function and call.function.name:
                entry["name"] += call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
check("streamed tools", streamed_calls.get(0, {}).get("name") == "get_weather", streamed_calls)

embeddings = client.embeddings.create(model="openai/text-embedding-3-small", input=["a", "b"])
check("embeddings", len(embeddings.data) == 2 and len(embeddings.data[1].embedding) > 0, embeddings)

models = [m.id for m in client.models.list()]
check("models", "smart" in models and "openai/gpt-4o-mini" in models, models)

image = client.images.generate(model="studio/sd_xl_base_1.0", prompt="a fox", size="512x512",
                               response_format="b64_json")
png = base64.b64decode(image.data[0].b64_json)
check("image", png[:8] == b"\x89PNG\r\n\x1a\n", png[:8])

try:
    client.chat.completions.create(model="nowhere/x", messages=[{"role": "user", "content": "x"}])
    check("not found raises", False, "no exception")
except openai.NotFoundError as e:
    check("not found raises", e.status_code == 404 and "does not exist" in str(e), e)

try:
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=[])
    check("bad request raises", False, "no exception")
except openai.BadRequestError as e:
    check("bad request raises", e.status_code == 400, e)

bad = openai.OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1", api_key="axk_not-a-key",
                    http_client=http, max_retries=0)
try:
    bad.models.list()
    check("wrong key raises", False, "no exception")
except openai.AuthenticationError as e:
    check("wrong key raises", e.status_code == 401, e)

limited = openai.OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1",
                        api_key=os.environ["LIMITED_KEY"], http_client=http, max_retries=0)
limited.chat.completions.create(model="openai/gpt-4o-mini",
                                messages=[{"role": "user", "content": "one"}])
try:
    limited.chat.completions.create(model="openai/gpt-4o-mini",
                                    messages=[{"role": "user", "content": "two"}])
    check("rate limit raises", False, "no exception")
except openai.RateLimitError as e:
    check("rate limit raises", e.status_code == 429 and e.response.headers.get("retry-after"), e)

try:
    for _ in client.chat.completions.create(
        model="cut", messages=[{"role": "user", "content": "cut me off"}], stream=True
    ):
        pass
    check("cut stream raises", False, "the stream looked complete")
except openai.APIError as e:
    check("cut stream raises", "broke off mid-stream" in str(e), e)

print("all checks passed")
