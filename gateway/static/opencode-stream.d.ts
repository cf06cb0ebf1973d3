// Types for opencode-stream.js (the gateway serves both at /static/). Copy this file beside the module.

export type SessionStatus = "pending" | "running" | "waiting" | "completed" | "error" | "cancelled";
export type SessionType = "ask" | "chat" | "admin";
export type ToolStatus = "pending" | "running" | "completed" | "error";

/** OpenCode's message info and parts, as the gateway passes them on (only the fields the UI reads are typed). */
export interface MessageInfo {
  id: string;
  role?: "user" | "assistant";
  time?: { created?: number; completed?: number };
  error?: { name?: string; data?: { message?: string } & Record<string, unknown> } | null;
  [key: string]: unknown;
}

export interface Part {
  id: string;
  messageID: string;
  type: string;
  text?: string;
  time?: { start?: number; end?: number };
  tool?: string;
  callID?: string;
  state?: ToolState;
  [key: string]: unknown;
}

export interface ToolState {
  status: ToolStatus;
  input?: Record<string, unknown>;
  output?: string;
  title?: string;
  error?: string;
  metadata?: Record<string, unknown> & { output?: string };
  time?: { start?: number; end?: number };
}

export interface Message {
  info: MessageInfo;
  parts: Part[];
}

export interface Session {
  sessionId: string;
  ticketId: string | null;
  sessionType: SessionType;
  status: SessionStatus;
  title: string | null;
  messages: Message[];
  currentToolCalls: Part[];
  error: string | null;
  startedAt: number;
  updatedAt: number;
  metadata: unknown;
  seq: number;
  live: boolean;
  usage?: Usage;
  /** The requests the run waits on while its status is `waiting`; [] otherwise (and once archived). */
  pending?: PendingRequest[];
}

/** A permission request or question a run waits on (the live state's `pending`). */
export interface PendingRequest {
  kind: "permission" | "question";
  id: string;
  askedAt: number;
  tool: { messageID: string; callID: string } | null;
  /** permission: what is asked (bash, edit…), the patterns (e.g. the command), metadata ({command}), `always`. */
  permission?: string;
  patterns?: string[];
  metadata?: Record<string, unknown>;
  always?: string[];
  /** question: the questions, in order, each with its options. */
  questions?: {
    question: string;
    header: string;
    options: { label: string; description: string }[];
    multiple?: boolean;
    custom?: boolean;
  }[];
}

export interface SessionSummary {
  sessionId: string;
  ticketId: string | null;
  sessionType: SessionType;
  status: SessionStatus;
  title: string | null;
  startedAt: number;
  updatedAt: number;
  error?: string | null;
  seq?: number;
  live?: boolean;
  messageCount?: number;
  pending?: PendingRequest[];
}

export interface Update {
  seq: number;
  type: "update";
  sessionId: string;
  state?: Partial<Pick<Session, "status" | "error" | "updatedAt" | "currentToolCalls" | "title" | "pending">>;
  messages: MessageInfo[];
  parts: Part[];
  removedMessages: string[];
  removedParts: { messageID: string; id: string }[];
}

/** Streamed text added to the end of one part's field: `offset` is the field's length before it and `length` its
 * length after (UTF-16 code units, as `String.prototype.length` counts). `part`, when present, is the part's new
 * value without that field (its other fields changed too, e.g. as the part ends). */
export interface Append {
  messageID: string;
  partID: string;
  field: string;
  offset: number;
  length: number;
  delta: string;
  part?: Part;
}

/** The append form of an `update`: text streamed into parts the client already holds. */
export interface AppendUpdate {
  seq: number;
  type: "update";
  sessionId: string;
  state?: Partial<Pick<Session, "updatedAt">>;
  appends: Append[];
}

export interface ToolCall {
  id: string;
  messageID: string;
  callID: string | null;
  tool: string | null;
  status: ToolStatus;
  title: string | null;
  input: Record<string, unknown>;
  output: string | null;
  error: string | null;
  time: { start?: number; end?: number } | null;
  part: Part;
}

export interface Page<T = SessionSummary> {
  sessions: T[];
  nextCursor: string | null;
}

export interface RequestOptions {
  token?: string | null;
  fetch?: typeof fetch;
  signal?: AbortSignal;
}

export interface StreamOptions {
  token?: string | null;
  EventSource?: typeof EventSource;
  fetch?: typeof fetch;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Drop and resume a connection that has been silent this long (the gateway pings every 15 s). Default 45000;
   * 0 turns the watchdog off. */
  heartbeatTimeoutMs?: number;
  /** Called when the gateway ends the stream at the token's expiry (`token-expired`), or refuses it (401) on a
   * reconnect: return a fresh token (or a promise of one) to resume where the stream was; null or a throw stops
   * it with errorStatus 401. Without it, an expired token stops the stream. */
  refreshToken?: () => string | null | undefined | Promise<string | null | undefined>;
  now?: () => number;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
}

export interface SessionState {
  session: Session | null;
  messages: Message[];
  toolCalls: ToolCall[];
  status: SessionStatus | null;
  error: string | null;
  live: boolean | null;
  resuming: boolean;
  connected: boolean;
  completed: boolean;
  seq: number | null;
  /** The requests the run waits on (status `waiting`); [] when none. */
  pending: PendingRequest[];
}

export interface SessionStream extends SessionState {
  readonly sessionId: string;
  /** The HTTP status behind a fatal `error` (401, 403, 404, …); null otherwise. */
  readonly errorStatus: number | null;
  readonly closed: boolean;
  readonly reconnects: number;
  readonly resyncs: number;
  /** How many fresh tokens refreshToken supplied. */
  readonly tokenRefreshes: number;
  snapshot(): SessionState;
  close(): void;
}

export interface LiveSessionsStream {
  readonly sessions: SessionSummary[];
  readonly connected: boolean;
  readonly resuming: boolean;
  readonly received: boolean;
  readonly error: string | null;
  readonly errorStatus: number | null;
  readonly closed: boolean;
  /** How many fresh tokens refreshToken supplied. */
  readonly tokenRefreshes: number;
  close(): void;
}

export class GatewayError extends Error {
  readonly status: number;
  readonly detail: unknown;
  constructor(status: number, message: string, detail?: unknown);
}

export function openSessionStream(
  baseUrl: string,
  sessionId: string,
  options?: StreamOptions & { onChange?: (stream: SessionStream) => void },
): SessionStream;

export function openLiveSessionsStream(
  baseUrl: string,
  options?: StreamOptions & {
    type?: SessionType | null;
    onChange?: (stream: LiveSessionsStream) => void;
    onEvent?: (name: "snapshot" | "appeared" | "status" | "ended", data: unknown) => void;
  },
): LiveSessionsStream;

export function applyUpdate(state: Session, change: Update | AppendUpdate): Session;
/** False when an append does not start where the held text ends, says another `length` than that plus its delta,
 * or would rename, move or replace its part (`field` id/type, a `part` with another id): re-sync by snapshot. */
export function appendsFit(state: Session, change: Update | AppendUpdate): boolean;
export function toolCallsOf(messages: Message[]): ToolCall[];
export function fetchJson<T = unknown>(baseUrl: string, path: string, options?: RequestOptions): Promise<T>;
export function fetchSession(baseUrl: string, sessionId: string, options?: RequestOptions): Promise<Session>;
export function fetchActiveSession(baseUrl: string, ticketId: string, options?: RequestOptions): Promise<Session | null>;
export function fetchTicketHistory(
  baseUrl: string,
  ticketId: string,
  options?: RequestOptions & { limit?: number; before?: string | null; messages?: boolean },
): Promise<Page>;
/** What a session used (summed over its assistant messages, one per model step). */
export interface Usage {
  tokens: { input: number; output: number; reasoning: number; cache: { read: number; write: number } };
  cost: number;
  steps: number;
}
export interface TicketUsage {
  ticketId: string;
  total: Usage;
  sessions: { sessionId: string; sessionType: string; status: string; startedAt: number | null; live: boolean; usage: Usage }[];
}
export function fetchTicketUsage(baseUrl: string, ticketId: string, options?: RequestOptions): Promise<TicketUsage>;
export function fetchSessions(
  baseUrl: string,
  options?: RequestOptions & {
    live?: boolean;
    type?: SessionType | null;
    ticket?: string | null;
    limit?: number;
    before?: string | null;
    messages?: boolean;
  },
): Promise<Page>;
