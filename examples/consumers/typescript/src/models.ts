// To parse this data:
//
//   import { Convert, CallData, CallbridgeCallEventV1 } from "./models";
//
//   const callData = Convert.toCallData(json);
//   const callbridgeCallEventV1 = Convert.toCallbridgeCallEventV1(json);
//
// These functions will throw an error if the JSON doesn't
// match the expected interface, even if the JSON is valid.

/**
 * A canonical call event (CloudEvents 1.0, structured JSON form).
 */
export interface CallbridgeCallEventV1 {
    /**
     * Extension: the call status, when the webhook carries one.
     */
    callstatus?: null | string;
    data:        CallData;
    /**
     * Always `application/json`.
     */
    datacontenttype: string;
    /**
     * Deterministic: the same webhook (by any replica, on any retry) gets the same id, so it
     * doubles as the deduplication key downstream. See docs/events.md for the derivation.
     */
    id: string;
    /**
     * Extension: `reconcile` on an event the bridge backfilled from the platform's call API
     * because its webhook never arrived (docs/reconcile.md); absent on events from webhooks.
     * Consumers that care where an event came from read it without parsing `data`.
     */
    origin?: null | string;
    /**
     * Extension (CloudEvents partitioning): the call id, so one call's events stay in order.
     */
    partitionkey: string;
    /**
     * Configured `event.source`, e.g. `/callbridge`.
     */
    source: string;
    /**
     * Always `1.0`.
     */
    specversion: string;
    /**
     * The call id, so consumers can filter one call's events without parsing `data`.
     */
    subject: string;
    /**
     * When the bridge received the webhook (RFC 3339, UTC).
     */
    time: string;
    /**
     * Extension (CloudEvents distributed tracing): W3C trace context of the publish.
     */
    traceparent?: null | string;
    /**
     * `<type_prefix>.call.<kind>.v1`, e.g. `ai.ringg.call.status.v1`.
     */
    type: string;
    [property: string]: unknown;
}

/**
 * The normalised call record. Every field is always present (null when the webhook did not
 * carry it), so consumers can rely on the shape whichever family sent the event.
 */
export interface CallData {
    agent_id?:            null | string;
    agent_message_count?: number | null;
    agent_name?:          null | string;
    /**
     * Analysis results (`data.analysis` or `analysis_data`); null when the event has none.
     */
    analysis?:        { [key: string]: unknown } | null;
    analysis_source?: AnalysisSourceEnum | null;
    bulk_list_id?:    null | string;
    /**
     * `call_cost`, in the platform's billing currency.
     */
    call_cost?: number | null;
    call_id:    string;
    /**
     * The telephony provider's call id.
     */
    call_sid?: null | string;
    /**
     * Query parameters of the webhook URL (the sender's `callback_args.params`).
     */
    callback_params: { [key: string]: string };
    /**
     * When the call was placed (`called_on`), as sent.
     */
    called_at?: null | string;
    /**
     * The customer's own `custom_args_values` from the call request.
     */
    custom_args?: { [key: string]: unknown } | null;
    /**
     * `inbound`, `outbound`, `webcall`, ... as sent (`call_direction` or `call_type`).
     */
    direction?: null | string;
    /**
     * Call duration in seconds (`call_duration`).
     */
    duration_seconds?: number | null;
    /**
     * The agent event's `event_type` as sent; null for callback webhooks.
     */
    event_type?: null | string;
    /**
     * Fields the sender sent that this version does not know, kept verbatim. Callback family:
     * unknown `data.*` fields by name, unknown top-level fields under `_envelope`.
     */
    extra:                    { [key: string]: unknown };
    family:                   Family;
    first_utterance_seconds?: number | null;
    from_number?:             null | string;
    /**
     * The same as the kind in `type`.
     */
    kind: Kind;
    /**
     * The sender's descriptive `message`.
     */
    message?:                 null | string;
    overall_latency_seconds?: number | null;
    /**
     * `recording_duration`, in seconds.
     */
    recording_duration_seconds?: number | null;
    recording_url?:              null | string;
    /**
     * Which attempt of the call this is (`retry` or `retry_count`).
     */
    retry?: number | null;
    /**
     * The call status (`registered`, `ongoing`, `completed`, `failed`, `error`, `cancelled`,
     * `retry`, or any newer status, unchanged).
     */
    status?: null | string;
    /**
     * `call_started`'s `sub_status`, e.g. `ACCEPTED`.
     */
    sub_status?:     null | string;
    to_number?:      null | string;
    tool_call_logs?: unknown[] | null;
    /**
     * The transcript exactly as sent: a string (callback family) or an array of turns.
     */
    transcript?: unknown;
    /**
     * The transcript normalised to turns, whatever its shape on the wire.
     */
    transcript_turns?:    TranscriptTurnElement[] | null;
    user_message_count?:  number | null;
    version_description?: null | string;
    version_id?:          null | string;
    version_slug?:        null | string;
    workspace_id?:        null | string;
    [property: string]: unknown;
}

/**
 * `data.analysis` of a callback webhook.
 *
 * `platform_analysis_completed`: the platform's own analysis.
 *
 * `client_analysis_completed`: the customer's configured prompts.
 */
export type AnalysisSourceEnum = "callback" | "platform" | "client";

/**
 * Which of the platform's two webhook mechanisms delivered the event.
 *
 * The per-call `callback_url` (`{"status": "success", "data": {...}}`).
 *
 * An agent event subscription (flat JSON with `event_type`).
 */
export type Family = "callback" | "agent_event";

/**
 * The same as the kind in `type`.
 *
 * What happened to the call. Part of the CloudEvents `type`, of routing templates and of
 * sinks'
 * `events` filters, and the same whichever webhook family reported it.
 *
 * The call started (agent event `call_started`).
 *
 * The call's status changed (callback webhook with `data.status`; agent event
 * `call_completed`).
 *
 * The recording is ready (agent event `recording_completed`).
 *
 * An analysis is ready (callback webhook with `data.analysis`; agent events
 * `platform_analysis_completed`, `client_analysis_completed`); see `analysis_source`.
 *
 * Everything about the call is final (agent event `all_processing_completed`).
 *
 * An agent event type this version does not know, forwarded unchanged (see `event_type`).
 */
export type Kind = "started" | "status" | "recording" | "analysis" | "processed" | "other";

/**
 * One turn of the conversation.
 */
export interface TranscriptTurnElement {
    /**
     * `agent` (sent as `bot`, `assistant` or `agent`), `user` (`user`, `customer`, `human`),
     * any other role lowercased as sent, or null when the transcript was one plain string.
     */
    speaker?: null | string;
    text:     string;
    [property: string]: unknown;
}

// Converts JSON strings to/from your types
// and asserts the results of JSON.parse at runtime
export class Convert {
    public static toCallData(json: string): CallData {
        return cast(JSON.parse(json), r("CallData"));
    }

    public static callDataToJson(value: CallData): string {
        return JSON.stringify(uncast(value, r("CallData")), null, 2);
    }

    public static toCallbridgeCallEventV1(json: string): CallbridgeCallEventV1 {
        return cast(JSON.parse(json), r("CallbridgeCallEventV1"));
    }

    public static callbridgeCallEventV1ToJson(value: CallbridgeCallEventV1): string {
        return JSON.stringify(uncast(value, r("CallbridgeCallEventV1")), null, 2);
    }
}

function invalidValue(typ: any, val: any, key: any, parent: any = ''): never {
    const prettyTyp = prettyTypeName(typ);
    const parentText = parent ? ` on ${parent}` : '';
    const keyText = key ? ` for key "${key}"` : '';
    throw Error(`Invalid value${keyText}${parentText}. Expected ${prettyTyp} but got ${JSON.stringify(val)}`);
}

function prettyTypeName(typ: any): string {
    if (Array.isArray(typ)) {
        if (typ.length === 2 && typ[0] === undefined) {
            return `an optional ${prettyTypeName(typ[1])}`;
        } else {
            return `one of [${typ.map(a => { return prettyTypeName(a); }).join(", ")}]`;
        }
    } else if (typeof typ === "object" && typ.literal !== undefined) {
        return typ.literal;
    } else {
        return typeof typ;
    }
}

function jsonToJSProps(typ: any): any {
    if (typ.jsonToJS === undefined) {
        const map: any = {};
        typ.props.forEach((p: any) => map[p.json] = { key: p.js, typ: p.typ });
        typ.jsonToJS = map;
    }
    return typ.jsonToJS;
}

function jsToJSONProps(typ: any): any {
    if (typ.jsToJSON === undefined) {
        const map: any = {};
        typ.props.forEach((p: any) => map[p.js] = { key: p.json, typ: p.typ });
        typ.jsToJSON = map;
    }
    return typ.jsToJSON;
}

function transform(val: any, typ: any, getProps: any, key: any = '', parent: any = ''): any {
    function transformPrimitive(typ: string, val: any): any {
        if (typeof typ === typeof val) return val;
        return invalidValue(typ, val, key, parent);
    }

    function transformUnion(typs: any[], val: any): any {
        // val must validate against one typ in typs
        const l = typs.length;
        for (let i = 0; i < l; i++) {
            const typ = typs[i];
            try {
                return transform(val, typ, getProps);
            } catch (_) {}
        }
        return invalidValue(typs, val, key, parent);
    }

    function transformEnum(cases: string[], val: any): any {
        if (cases.indexOf(val) !== -1) return val;
        return invalidValue(cases.map(a => { return l(a); }), val, key, parent);
    }

    function transformArray(typ: any, val: any): any {
        // val must be an array with no invalid elements
        if (!Array.isArray(val)) return invalidValue(l("array"), val, key, parent);
        return val.map(el => transform(el, typ, getProps));
    }

    function transformDate(val: any): any {
        if (val === null) {
            return null;
        }
        const d = new Date(val);
        if (isNaN(d.valueOf())) {
            return invalidValue(l("Date"), val, key, parent);
        }
        return d;
    }

    function transformObject(props: { [k: string]: any }, additional: any, val: any): any {
        if (val === null || typeof val !== "object" || Array.isArray(val)) {
            return invalidValue(l(ref || "object"), val, key, parent);
        }
        const result: any = {};
        Object.getOwnPropertyNames(props).forEach(key => {
            const prop = props[key];
            const v = Object.prototype.hasOwnProperty.call(val, key) ? val[key] : undefined;
            result[prop.key] = transform(v, prop.typ, getProps, key, ref);
        });
        Object.getOwnPropertyNames(val).forEach(key => {
            if (!Object.prototype.hasOwnProperty.call(props, key)) {
                result[key] = transform(val[key], additional, getProps, key, ref);
            }
        });
        return result;
    }

    if (typ === "any") return val;
    if (typ === null) {
        if (val === null) return val;
        return invalidValue(typ, val, key, parent);
    }
    if (typ === false) return invalidValue(typ, val, key, parent);
    let ref: any = undefined;
    while (typeof typ === "object" && typ.ref !== undefined) {
        ref = typ.ref;
        typ = typeMap[typ.ref];
    }
    if (Array.isArray(typ)) return transformEnum(typ, val);
    if (typeof typ === "object") {
        return typ.hasOwnProperty("unionMembers") ? transformUnion(typ.unionMembers, val)
            : typ.hasOwnProperty("arrayItems")    ? transformArray(typ.arrayItems, val)
            : typ.hasOwnProperty("props")         ? transformObject(getProps(typ), typ.additional, val)
            : invalidValue(typ, val, key, parent);
    }
    // Numbers can be parsed by Date but shouldn't be.
    if (typ === Date && typeof val !== "number") return transformDate(val);
    return transformPrimitive(typ, val);
}

function cast<T>(val: any, typ: any): T {
    return transform(val, typ, jsonToJSProps);
}

function uncast<T>(val: T, typ: any): any {
    return transform(val, typ, jsToJSONProps);
}

function l(typ: any) {
    return { literal: typ };
}

function a(typ: any) {
    return { arrayItems: typ };
}

function u(...typs: any[]) {
    return { unionMembers: typs };
}

function o(props: any[], additional: any) {
    return { props, additional };
}

function m(additional: any) {
    return { props: [], additional };
}

function r(name: string) {
    return { ref: name };
}

const typeMap: any = {
    "CallbridgeCallEventV1": o([
        { json: "callstatus", js: "callstatus", typ: u(undefined, u(null, "")) },
        { json: "data", js: "data", typ: r("CallData") },
        { json: "datacontenttype", js: "datacontenttype", typ: "" },
        { json: "id", js: "id", typ: "" },
        { json: "origin", js: "origin", typ: u(undefined, u(null, "")) },
        { json: "partitionkey", js: "partitionkey", typ: "" },
        { json: "source", js: "source", typ: "" },
        { json: "specversion", js: "specversion", typ: "" },
        { json: "subject", js: "subject", typ: "" },
        { json: "time", js: "time", typ: "" },
        { json: "traceparent", js: "traceparent", typ: u(undefined, u(null, "")) },
        { json: "type", js: "type", typ: "" },
    ], "any"),
    "CallData": o([
        { json: "agent_id", js: "agent_id", typ: u(undefined, u(null, "")) },
        { json: "agent_message_count", js: "agent_message_count", typ: u(undefined, u(0, null)) },
        { json: "agent_name", js: "agent_name", typ: u(undefined, u(null, "")) },
        { json: "analysis", js: "analysis", typ: u(undefined, u(m("any"), null)) },
        { json: "analysis_source", js: "analysis_source", typ: u(undefined, u(r("AnalysisSourceEnum"), null)) },
        { json: "bulk_list_id", js: "bulk_list_id", typ: u(undefined, u(null, "")) },
        { json: "call_cost", js: "call_cost", typ: u(undefined, u(3.14, null)) },
        { json: "call_id", js: "call_id", typ: "" },
        { json: "call_sid", js: "call_sid", typ: u(undefined, u(null, "")) },
        { json: "callback_params", js: "callback_params", typ: m("") },
        { json: "called_at", js: "called_at", typ: u(undefined, u(null, "")) },
        { json: "custom_args", js: "custom_args", typ: u(undefined, u(m("any"), null)) },
        { json: "direction", js: "direction", typ: u(undefined, u(null, "")) },
        { json: "duration_seconds", js: "duration_seconds", typ: u(undefined, u(3.14, null)) },
        { json: "event_type", js: "event_type", typ: u(undefined, u(null, "")) },
        { json: "extra", js: "extra", typ: m("any") },
        { json: "family", js: "family", typ: r("Family") },
        { json: "first_utterance_seconds", js: "first_utterance_seconds", typ: u(undefined, u(3.14, null)) },
        { json: "from_number", js: "from_number", typ: u(undefined, u(null, "")) },
        { json: "kind", js: "kind", typ: r("Kind") },
        { json: "message", js: "message", typ: u(undefined, u(null, "")) },
        { json: "overall_latency_seconds", js: "overall_latency_seconds", typ: u(undefined, u(3.14, null)) },
        { json: "recording_duration_seconds", js: "recording_duration_seconds", typ: u(undefined, u(3.14, null)) },
        { json: "recording_url", js: "recording_url", typ: u(undefined, u(null, "")) },
        { json: "retry", js: "retry", typ: u(undefined, u(0, null)) },
        { json: "status", js: "status", typ: u(undefined, u(null, "")) },
        { json: "sub_status", js: "sub_status", typ: u(undefined, u(null, "")) },
        { json: "to_number", js: "to_number", typ: u(undefined, u(null, "")) },
        { json: "tool_call_logs", js: "tool_call_logs", typ: u(undefined, u(a("any"), null)) },
        { json: "transcript", js: "transcript", typ: u(undefined, "any") },
        { json: "transcript_turns", js: "transcript_turns", typ: u(undefined, u(a(r("TranscriptTurnElement")), null)) },
        { json: "user_message_count", js: "user_message_count", typ: u(undefined, u(0, null)) },
        { json: "version_description", js: "version_description", typ: u(undefined, u(null, "")) },
        { json: "version_id", js: "version_id", typ: u(undefined, u(null, "")) },
        { json: "version_slug", js: "version_slug", typ: u(undefined, u(null, "")) },
        { json: "workspace_id", js: "workspace_id", typ: u(undefined, u(null, "")) },
    ], "any"),
    "TranscriptTurnElement": o([
        { json: "speaker", js: "speaker", typ: u(undefined, u(null, "")) },
        { json: "text", js: "text", typ: "" },
    ], "any"),
    "AnalysisSourceEnum": [
        "callback",
        "client",
        "platform",
    ],
    "Family": [
        "agent_event",
        "callback",
    ],
    "Kind": [
        "analysis",
        "other",
        "processed",
        "recording",
        "started",
        "status",
    ],
};
