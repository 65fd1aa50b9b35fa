// Calling Switchboard from Node with @grpc/grpc-js: Invoke, Stream, a caller tool whose
// schema is JSON text, and the error details every Switchboard error carries
// (google.rpc.ErrorInfo, BadRequest, RetryInfo in the grpc-status-details-bin trailer).
//
//   npm install && node example.mjs 127.0.0.1:50051      (SWITCHBOARD_API_KEY=sb_... when auth is on)
//
// Prints one JSON line per step.
import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const address = process.argv[2] ?? "127.0.0.1:50051";
const agent = process.argv[3] ?? "echo";

const definition = protoLoader.loadSync("switchboard/v1/agent.proto", {
  includeDirs: [path.join(repo, "proto")],
  keepCase: true, // field names as in the .proto: parameters_json, finish_reason…
  longs: Number, // token counts (int64) as numbers
  enums: String,
  defaults: true,
  oneofs: true,
});
const { AgentService } = grpc.loadPackageDefinition(definition).switchboard.v1;

// The error details' types, from the vendored googleapis protos (google/protobuf/* are
// built into protobufjs).
const rpc = protobuf.loadSync([
  path.join(repo, "third_party/googleapis/google/rpc/status.proto"),
  path.join(repo, "third_party/googleapis/google/rpc/error_details.proto"),
]);
const Status = rpc.lookupType("google.rpc.Status");

/** The google.rpc details of a failed call, as plain objects keyed by their type name. */
export function errorDetails(error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return {};
  const status = Status.decode(raw);
  const details = {};
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    details[name] = rpc.lookupType(name).toObject(rpc.lookupType(name).decode(any.value), {
      longs: Number,
      defaults: true,
    });
  }
  return details;
}

const metadata = new grpc.Metadata();
if (process.env.SWITCHBOARD_API_KEY) {
  metadata.set("authorization", `Bearer ${process.env.SWITCHBOARD_API_KEY}`);
}
const client = new AgentService(address, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 30_000);
const user = (text) => ({ role: "ROLE_USER", content: [{ text }] });
const print = (value) => console.log(JSON.stringify(value));

function invoke(request) {
  return new Promise((resolve, reject) =>
    client.Invoke(request, metadata, { deadline: deadline() }, (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );
}

async function failure(request) {
  try {
    await invoke(request);
    return { code: "OK" };
  } catch (error) {
    return { code: grpc.status[error.code], message: error.details, details: errorDetails(error) };
  }
}

const answer = await invoke({ agent, messages: [user("hello from node")] });
print({ step: "invoke", text: answer.message.content[0].text, tokens: answer.usage.output_tokens });

let streamed = "";
for await (const event of client.Stream({ agent, messages: [user("streamed to node")] }, metadata, {
  deadline: deadline(),
})) {
  if (event.event === "text_delta") streamed += event.text_delta.text;
}
print({ step: "stream", text: streamed });

// A JSON schema as JSON text: a plain object set as a google.protobuf.Struct would arrive as {}.
const schema = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
const tooled = await failure({
  agent,
  messages: [user("weather?")],
  tools: [{ name: "get_weather", parameters_json: JSON.stringify(schema) }],
});
print({ step: "tool_schema_json", ...tooled });

print({ step: "not_found", ...(await failure({ agent: "no-such-agent", messages: [user("x")] })) });
print({ step: "bad_request", ...(await failure({ agent, messages: [{ content: [{ text: "x" }] }] })) });

// Past the tenant's rate limit (when one is configured): RESOURCE_EXHAUSTED with RetryInfo.
for (let i = 0; i < 20; i++) {
  const limited = await failure({ agent, messages: [user("again")] });
  if (limited.code !== "OK") {
    print({ step: "limited", ...limited });
    break;
  }
}
client.close();
