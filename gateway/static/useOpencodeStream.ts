// useOpencodeStream — a React hook over opencode-stream.js. Copy this file, opencode-stream.js and
// opencode-stream.d.ts (all served by the gateway under /static/) into your app; React 18 or 19, no other
// dependency. It opens the session's SSE stream, keeps the transcript current, reconnects by itself (with
// backoff and lastEventId) and closes the stream when the component unmounts or the session id changes.
// When the token expires the gateway ends the stream: pass `refreshToken` (returns a fresh token, or a promise of
// one) and the stream resumes in place; a new `token` value instead opens a new stream.
//
//   const { messages, toolCalls, status, error, live, resuming } =
//     useOpencodeStream(sessionId, { baseUrl: "https://gateway.example", token });

import { useEffect, useRef, useState } from "react";

import { openSessionStream } from "./opencode-stream.js";
import type { Message, PendingRequest, Session, SessionStatus, StreamOptions, ToolCall } from "./opencode-stream.js";

export interface UseOpencodeStreamOptions extends StreamOptions {
  /** The gateway's origin (and path prefix, if any); "" (the default) means the page's own origin. */
  baseUrl?: string;
  /** A gateway token for this session, its ticket, or admin; sent as ?token=. */
  token?: string | null;
  /** false: open nothing (e.g. until the token is known). Default true. */
  enabled?: boolean;
}

export interface OpencodeStreamState {
  /** OpenCode's transcript, [{info, parts}], ordered by id as OpenCode orders it. */
  messages: Message[];
  /** Every tool call of the session with its status (pending / running / completed / error), title and output. */
  toolCalls: ToolCall[];
  /** pending | running | waiting | completed | error | cancelled; null until the first snapshot. */
  status: SessionStatus | null;
  /** The session's error, or why the stream stopped (no token, forbidden, unknown session); else null. */
  error: string | null;
  /** true while the session is live, false once archived; null until the first snapshot. */
  live: boolean | null;
  /** true while the stream reconnects or re-syncs after a drop (show "Resuming session…"). */
  resuming: boolean;
  /** The whole session object (title, ticketId, sessionType, startedAt, …); null until the first snapshot. */
  session: Session | null;
  connected: boolean;
  /** The stream ended with `complete`: `session` is the archived row. */
  completed: boolean;
  /** The permission requests and questions the run waits on (status `waiting`); [] when none. */
  pending: PendingRequest[];
}

const EMPTY: OpencodeStreamState = {
  messages: [],
  toolCalls: [],
  status: null,
  error: null,
  live: null,
  resuming: false,
  session: null,
  connected: false,
  completed: false,
  pending: [],
};

export function useOpencodeStream(
  sessionId: string | null | undefined,
  options: UseOpencodeStreamOptions = {},
): OpencodeStreamState {
  const { baseUrl = "", token = null, enabled = true } = options;
  const latest = useRef(options);
  latest.current = options;
  const key = enabled && sessionId ? `${baseUrl}\n${sessionId}\n${token ?? ""}` : null;
  const [held, setHeld] = useState<{ key: string | null; state: OpencodeStreamState }>({ key: null, state: EMPTY });

  useEffect(() => {
    if (key === null || !sessionId) return undefined;
    let active = true;
    const { baseUrl: _base, token: _token, enabled: _enabled, ...streamOptions } = latest.current;
    const stream = openSessionStream(baseUrl, sessionId, {
      ...streamOptions,
      token,
      // the latest callback the component gave: a token refresh keeps the stream (and its transcript) going
      refreshToken: streamOptions.refreshToken ? () => (latest.current.refreshToken ?? (() => null))() : undefined,
      onChange(current) {
        if (!active) return;
        const s = current.snapshot();
        setHeld({
          key,
          state: {
            messages: s.messages,
            toolCalls: s.toolCalls,
            status: s.status,
            error: s.error,
            live: s.live,
            resuming: s.resuming,
            session: s.session,
            connected: s.connected,
            completed: s.completed,
            pending: s.pending,
          },
        });
      },
    });
    return () => {
      active = false;
      stream.close();
    };
  }, [key, baseUrl, sessionId, token]);

  // A render for a new session id shows nothing of the previous one, even before the effect has run.
  return held.key === key && key !== null ? held.state : EMPTY;
}

export default useOpencodeStream;
