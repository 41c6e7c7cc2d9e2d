// REST helpers (docs/) shared by the k6 scripts.
import http from 'k6/http';
import { authHeaders } from './config.js';

/** The conversation between `me` and `otherId` (created or found); returns its id or null. */
export function conversation(base, me, otherId, jobId, jar) {
  const body = { participantId: otherId };
  if (jobId) body.jobId = jobId;
  const params = authHeaders(me);
  if (jar) params.jar = jar;
  params.tags = { name: 'POST /api/chat/conversations' };
  const r = http.post(`${base}/api/chat/conversations`, JSON.stringify(body), params);
  if (r.status !== 200 && r.status !== 201) {
    console.error(`create conversation: ${r.status} ${r.body}`);
    return null;
  }
  return r.json('data._id');
}
