// Switchboard from a browser with fetch alone: the OpenAI-compatible door (streamed with
// server-sent events) and the Connect protocol in JSON (unary, and server streaming as
// enveloped frames). The page's origin must be in the server's server.http.cors.allow_origins.
// For typed stubs generated from the contract, use Connect-ES (`buf generate` gives
// gen/es); this file shows the wire with nothing to install.

export class SwitchboardError extends Error {
  /** code: Connect's ("not_found", "unauthenticated"…) or OpenAI's error code;
   *  reason: google.rpc.ErrorInfo's reason ("AGENT_NOT_FOUND"…); requestId: x-request-id. */
  constructor(code, message, reason, requestId) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    this.reason = reason;
    this.requestId = requestId;
  }
}

export class Switchboard {
  constructor(baseUrl, apiKey = "") {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.apiKey = apiKey;
  }

  headers(contentType) {
    const headers = { "content-type": contentType, "connect-protocol-version": "1" };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    return headers;
  }

  /** The OpenAI door, streamed: yields the answer's text deltas. */
  async *chatStream(model, text) {
    const response = await fetch(`${this.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: this.headers("application/json"),
      body: JSON.stringify({ model, messages: [{ role: "user", content: text }], stream: true }),
    });
    const requestId = response.headers.get("x-request-id");
    if (!response.ok) {
      const { error } = await response.json();
      throw new SwitchboardError(error.code, error.message, error.code.toUpperCase(), requestId);
    }
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        throw new SwitchboardError(chunk.error.code, chunk.error.message, chunk.error.code.toUpperCase(), requestId);
      }
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) yield delta;
    }
  }

  /** AgentService.Invoke over Connect JSON: { text, requestId, outputTokens }. */
  async invoke(agent, text) {
    const response = await fetch(`${this.baseUrl}/switchboard.v1.AgentService/Invoke`, {
      method: "POST",
      headers: this.headers("application/json"),
      body: JSON.stringify(userTurn(agent, text)),
    });
    const body = await response.json();
    if (!response.ok) throw connectError(body, response.headers.get("x-request-id"));
    return {
      text: body.message.content.map((part) => part.text ?? "").join(""),
      requestId: body.requestId,
      // int64 fields are JSON strings in protobuf's JSON mapping.
      outputTokens: Number(body.usage?.outputTokens ?? 0),
    };
  }

  /** AgentService.Stream over Connect JSON: yields the events ({start}, {textDelta}…). */
  async *stream(agent, text) {
    const payload = new TextEncoder().encode(JSON.stringify(userTurn(agent, text)));
    const framed = new Uint8Array(5 + payload.length);
    new DataView(framed.buffer).setUint32(1, payload.length);
    framed.set(payload, 5);
    const response = await fetch(`${this.baseUrl}/switchboard.v1.AgentService/Stream`, {
      method: "POST",
      headers: this.headers("application/connect+json"),
      body: framed,
    });
    const requestId = response.headers.get("x-request-id");
    if (!response.ok) throw connectError(await response.json(), requestId);
    for await (const [flags, bytes] of envelopes(response.body)) {
      const message = JSON.parse(new TextDecoder().decode(bytes));
      if (flags & 0x02) {  // end of stream: an error, or none
        if (message.error) throw connectError(message.error, requestId);
        return;
      }
      yield message;
    }
  }
}

function userTurn(agent, text) {
  return { agent, messages: [{ role: "ROLE_USER", content: [{ text }] }] };
}

function connectError(error, requestId) {
  return new SwitchboardError(error.code, error.message, errorInfoReason(error.details), requestId);
}

/** google.rpc.ErrorInfo's `reason` from a Connect error's details (base64 protobuf). */
function errorInfoReason(details) {
  const info = (details ?? []).find((detail) => detail.type === "google.rpc.ErrorInfo");
  if (!info) return "";
  const base64 = info.value.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  // Every ErrorInfo field is length-delimited: a tag byte, a varint length, the bytes.
  // Field 1 (tag 0x0a) is `reason`.
  let at = 0;
  while (at < bytes.length) {
    const tag = bytes[at++];
    let length = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[at++];
      length |= (byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
    }
    if (tag === 0x0a) return new TextDecoder().decode(bytes.subarray(at, at + length));
    at += length;
  }
  return "";
}

async function* chunks(body) {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** The `data:` payloads of a server-sent event stream. */
async function* sseData(body) {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of chunks(body)) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

/** Connect's enveloped frames: [flags, payload bytes]. */
async function* envelopes(body) {
  let buffer = new Uint8Array(0);
  for await (const chunk of chunks(body)) {
    const joined = new Uint8Array(buffer.length + chunk.length);
    joined.set(buffer);
    joined.set(chunk, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const size = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + size) break;
      yield [buffer[0], buffer.subarray(5, 5 + size)];
      buffer = buffer.subarray(5 + size);
    }
  }
}
