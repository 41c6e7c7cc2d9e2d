// handleSummary for every script: the full k6 summary as JSON in SUMMARY_DIR (default: the
// working directory) as <script>-summary.json, for CI to keep as an artifact, plus a short text
// summary on stdout (thresholds and the main counters; k6's own text summary needs a remote
// jslib that offline runs cannot load).
import { WS_MODULE } from './socketio.js';

function fmt(v) {
  if (typeof v !== 'number') return String(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

export function summaryFor(script) {
  return function handleSummary(data) {
    const dir = (__ENV.SUMMARY_DIR || '.').replace(/\/+$/, '');
    const lines = [`${script} (websockets module: ${WS_MODULE})`];
    let failed = 0;
    for (const [name, m] of Object.entries(data.metrics).sort(([a], [b]) => a.localeCompare(b))) {
      const v = m.values || {};
      const shown = m.type === 'trend'
        ? `avg=${fmt(v.avg)} p(95)=${fmt(v['p(95)'])} p(99)=${fmt(v['p(99)'])} max=${fmt(v.max)}`
        : m.type === 'rate' ? `rate=${fmt(v.rate)} (${v.passes} / ${v.passes + v.fails})`
        : m.type === 'counter' ? `count=${fmt(v.count)}` : `value=${fmt(v.value)}`;
      const th = m.thresholds ? Object.entries(m.thresholds) : [];
      const bad = th.filter(([, t]) => !t.ok).map(([k]) => k);
      failed += bad.length;
      const mark = th.length === 0 ? '  ' : bad.length ? 'x ' : 'ok';
      lines.push(`  ${mark} ${name}: ${shown}${bad.length ? `  FAILED: ${bad.join(', ')}` : ''}`);
    }
    const checks = (data.root_group && data.root_group.checks) || [];
    for (const c of checks) lines.push(`  check "${c.name}": ${c.passes} passed, ${c.fails} failed`);
    lines.push(failed ? `  ${failed} thresholds failed` : '  all thresholds passed');
    return {
      stdout: `${lines.join('\n')}\n`,
      [`${dir}/${script.replace(/\.js$/, '')}-summary.json`]: JSON.stringify(data, null, 2),
    };
  };
}
