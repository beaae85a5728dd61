/* The wallboard's logic: poll a source, normalise it into one snapshot, render it.
 *
 * Sources (docs/wallboard.md):
 *   worker     — this worker's /api/kpis (the SPEC §5 report) and /api/live (last hour,
 *                freshness). Exact, but covers only the partitions this worker holds.
 *   prometheus — the kpi:* recording rules summed over every worker, read from Prometheus'
 *                HTTP API (?source=prometheus&prom=http://host:9090).
 * Every number shown carries data-kpi (what it is) and data-value (the raw number), so a test
 * or a curious person can check the page against the API.
 * Reps and teams are shown by their roster display names ([people] roster: /api/live's names,
 * or kpi_rep_info / kpi_team_info in Prometheus mode), by their id when the roster has none.
 */
(() => {
  'use strict';

  const settings = JSON.parse(document.getElementById('wallboard-settings').textContent || '{}');
  const params = new URLSearchParams(location.search);

  function number(name, fallback, min) {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) && value >= min ? value : fallback;
  }

  const options = {
    team: params.get('team') || null,
    rotate: number('rotate', 0, 0),
    stale: number('stale', 120, 1),
    refresh: number('refresh', 5, 0.5),
    minutes: Math.round(number('minutes', 60, 1)),
    top: Math.round(number('top', 10, 1)),
    lang: params.get('lang') || undefined,
    title: params.get('title') || 'Sales',
    source: (params.get('source') || (params.get('prom') ? 'prometheus' : settings.source)
             || 'worker').toLowerCase(),
    prom: (params.get('prom') || settings.prometheus_url || '').replace(/\/+$/, ''),
  };
  // A kiosk link carries its token (?token=, docs/security.md); the page sends it to this
  // worker's APIs as a header, and never to Prometheus.
  const token = params.get('token') || null;
  // Relative to the page, so the board also works behind a path prefix (/kpi/wallboard).
  const apiBase = location.pathname.replace(/wallboard\/?$/, '');
  const ACTIVITY_TYPES = ['call', 'email', 'meeting', 'demo', 'other'];

  const state = {
    scope: options.team,       // null = company
    rotation: [],              // scopes to rotate through: every team, then company
    rotationIndex: -1,
    snapshot: null,
    receivedAt: 0,             // Date.now() when the snapshot arrived
    error: null,
    timer: null,
  };

  // -- formatting ----------------------------------------------------------------------------

  const formats = {};
  function formatter(kind, currency) {
    const key = kind + (currency || '');
    if (!formats[key]) {
      const lang = options.lang;
      if (kind === 'money') {
        formats[key] = new Intl.NumberFormat(lang, {
          style: 'currency', currency, minimumFractionDigits: 0, maximumFractionDigits: 0});
      } else if (kind === 'percent') {
        formats[key] = new Intl.NumberFormat(lang, {
          style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1});
      } else {
        formats[key] = new Intl.NumberFormat(lang, {maximumFractionDigits: 0});
      }
    }
    return formats[key];
  }

  function format(kind, value, currency) {
    if (value === null || value === undefined || !Number.isFinite(value)) return '–';
    try {
      return formatter(kind, currency).format(value);
    } catch (err) {  // an unknown currency code: still show the number
      return formatter('count').format(value) + (currency ? ' ' + currency : '');
    }
  }

  function zoneFormat(timezone, parts) {
    try {
      return new Intl.DateTimeFormat(options.lang, {...parts, timeZone: timezone});
    } catch (err) {
      return new Intl.DateTimeFormat(options.lang, parts);
    }
  }

  function ago(seconds) {
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  function repName(snapshot, rep) {
    return (snapshot.names && snapshot.names.reps[rep]) || rep;
  }

  function teamName(snapshot, team) {
    return (snapshot && snapshot.names && snapshot.names.teams[team]) || team;
  }

  // -- fetching -------------------------------------------------------------------------------

  async function getJSON(url, withToken) {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), 20000);
    const headers = withToken && token ? {Authorization: `Bearer ${token}`} : {};
    try {
      const response = await fetch(url, {cache: 'no-store', signal: controller.signal, headers});
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        throw new Error(body.error || `${response.status} ${response.statusText}`);
      }
      return body;
    } finally {
      clearTimeout(timeout);
    }
  }

  // One scope of one window, as the page needs it. Pacing and forecast are the engine's own
  // numbers (SPEC §7.4/§7.5: the report's targets and KPIs, or their recording rules): the page
  // only compares pace with 1 to say "on pace" or "behind".
  function pick(scope) {
    const kpis = (scope && scope.kpis) || {};
    const target = (scope && scope.targets && scope.targets.revenue_won) || {};
    return {
      revenue_won: kpis.revenue_won ?? null,
      deals_won: kpis.deals_won ?? null,
      leads_qualified: kpis.leads_qualified ?? null,
      activities: kpis.activities ?? null,
      win_rate: kpis.win_rate ?? null,
      lead_conversion_rate: kpis.lead_conversion_rate ?? null,
      forecast_commit: kpis.forecast_commit ?? null,
      forecast_best_case: kpis.forecast_best_case ?? null,
      forecast_weighted: kpis.forecast_weighted ?? null,
      target: target.target ?? null,
      attainment: target.attainment ?? null,
      expected: target.expected ?? null,
      pace: target.pace ?? null,
      forecast_attainment: target.forecast_attainment ?? null,
    };
  }

  function leaderboard(rows) {
    return rows
      .sort((a, b) => (b.revenue_won - a.revenue_won) || (b.deals_won - a.deals_won)
                      || (a.rep < b.rep ? -1 : a.rep > b.rep ? 1 : 0))
      .slice(0, options.top);
  }

  async function loadWorker(team) {
    const report = await getJSON(apiBase + 'api/kpis', true);
    const query = new URLSearchParams({minutes: String(options.minutes), as_of: report.as_of});
    if (team) query.set('team', team);
    const live = await getJSON(apiBase + 'api/live?' + query, true);
    const windowOf = (period, offset) =>
      report.windows.find((w) => w.period === period && w.offset === offset);
    const scopeOf = (w) => (team ? w.teams[team] : w.company);
    const day = windowOf('day', 0);
    const month = windowOf('month', 0);
    const members = team ? new Set(live.reps_by_team[team] || []) : null;
    const reps = Object.entries(month.reps)
      .filter(([rep]) => !members || members.has(rep))
      .map(([rep, doc]) => ({rep, revenue_won: doc.kpis.revenue_won, deals_won: doc.kpis.deals_won}));
    const held = live.partitions.length;
    const total = live.partitions_total;
    return {
      asOf: report.as_of,
      timezone: report.timezone,
      currency: report.currency,
      teams: Object.keys(month.teams).sort(),
      unknownTeam: Boolean(team && !month.teams[team]),
      day: pick(scopeOf(day)),
      month: pick(scopeOf(month)),
      prevMonth: pick(scopeOf(windowOf('month', 1))),
      // Without [[pipeline.stages]] the stage-keyed KPIs are {} and the forecast is just the
      // revenue won (SPEC §7.1): the forecast panel then gives its room to the leaderboard.
      stages: Object.keys(month.company.kpis.pipeline_deals_by_stage || {}).length > 0,
      leaderboard: leaderboard(reps),
      live: {minutes: live.minutes, total: live.activities.total,
             byType: live.activities.by_type, perMinute: live.activities.per_minute},
      freshness: {secondsAgo: live.seconds_since_last_event, lastEventAt: live.last_event_at},
      names: {reps: (live.names && live.names.reps) || {}, teams: (live.names && live.names.teams) || {}},
      source: {
        mode: 'worker',
        text: `worker ${location.host} · ${held} of ${total} partitions`,
        partial: held < total,
      },
    };
  }

  async function promQuery(query, at) {
    const time = at === undefined ? '' : `&time=${at}`;
    const body = await getJSON(
      `${options.prom}/api/v1/query?query=${encodeURIComponent(query)}${time}`);
    if (body.status !== 'success') throw new Error(body.error || 'Prometheus query failed');
    return body.data.result;
  }

  async function loadPrometheus(team) {
    if (!options.prom) throw new Error('source=prometheus needs prom=http://host:9090');
    // Every number at the instant of the latest rule evaluation: the recorded KPIs and the
    // as_of scraped before it then belong together (a scrape after the evaluation would pair
    // new as_of with old KPIs, and the pace moves every second).
    const evaluated = await promQuery(
      'max(timestamp(kpi:revenue_won{scope="company",period="day",offset="0"}))');
    const at = evaluated[0] ? evaluated[0].value[1] : undefined;
    const atEval = (query) => promQuery(query, at);
    const [kpis, targets, pacing, info, asOf, members, activity, counted, latest, now,
           workers, stages, repInfo, teamInfo] = await Promise.all([
        atEval('{__name__=~"kpi:(revenue_won|deals_won|leads_qualified|activities|win_rate|'
               + 'lead_conversion_rate|forecast_commit|forecast_best_case|forecast_weighted)",'
               + 'period=~"day|month",offset=~"0|1"}'),
        atEval('kpi:target{kpi="revenue_won",period=~"day|month"}'),
        atEval('{__name__=~"kpi:target_(attainment|expected|pace|forecast_attainment)",'
               + 'kpi="revenue_won",period=~"day|month",offset="0"}'),
        atEval('max by (timezone, currency) (kpi_info)'),
        atEval('max(kpi_as_of_timestamp_seconds)'),
        atEval('sum by (team, rep) (kpi_rep_contributions{period="month",offset="0"}) > 0'),
        atEval('sum by (team, activity_type) (kpi_activities_last_hour)'),
        // Freshness is about now, not about the evaluation.
        promQuery('max(kpi_last_counted_timestamp_seconds)'),
        promQuery('max(kpi_last_event_timestamp_seconds)'),
        promQuery('time()'),
        atEval('count(kpi_worker_ready == 1)'),
        atEval('count(kpi:pipeline_deals_by_stage{scope="company",period="month",offset="0"})'),
        // Display names: one copy per worker, hence max (docs/metrics.md).
        promQuery('max by (rep, rep_name) (kpi_rep_info)'),
        promQuery('max by (team, team_name) (kpi_team_info)'),
      ]);
    const value = (sample) => Number(sample.value[1]);
    const teams = new Set();
    const scopes = {};  // "period/offset" -> {company: {...}, teams: {t: {...}}, reps: {r: {...}}}
    for (const sample of kpis) {
      const m = sample.metric;
      const name = m.__name__.slice(4);
      const key = `${m.period}/${m.offset}`;
      const windowDoc = scopes[key] || (scopes[key] = {company: {}, teams: {}, reps: {}});
      let bag = windowDoc.company;
      if (m.scope === 'team') {
        teams.add(m.team);
        bag = windowDoc.teams[m.team] || (windowDoc.teams[m.team] = {});
      } else if (m.scope === 'rep') {
        bag = windowDoc.reps[m.rep] || (windowDoc.reps[m.rep] = {});
      } else if (m.scope !== 'company') {
        continue;
      }
      bag[name] = value(sample);
    }
    const ofScope = (samples, period, name) => {
      const found = samples.find((s) => s.metric.period === period
        && (name === undefined || s.metric.__name__ === name) && (team
        ? s.metric.scope === 'team' && s.metric.team === team
        : s.metric.scope === 'company'));
      return found ? value(found) : null;
    };
    const targetOf = (period) => ({
      target: ofScope(targets, period),
      attainment: ofScope(pacing, period, 'kpi:target_attainment'),
      expected: ofScope(pacing, period, 'kpi:target_expected'),
      pace: ofScope(pacing, period, 'kpi:target_pace'),
      forecast_attainment: ofScope(pacing, period, 'kpi:target_forecast_attainment'),
    });
    const scopeOf = (period, offset) => {
      const windowDoc = scopes[`${period}/${offset}`] || {company: {}, teams: {}};
      const kpis = (team ? windowDoc.teams[team] : windowDoc.company) || {};
      // Counts are 0, not absent, for a listed scope (docs/metrics.md); ratios may be absent.
      return {kpis: {revenue_won: kpis.revenue_won ?? 0, deals_won: kpis.deals_won ?? 0,
                     leads_qualified: kpis.leads_qualified ?? 0,
                     activities: kpis.activities ?? 0, win_rate: kpis.win_rate,
                     lead_conversion_rate: kpis.lead_conversion_rate,
                     forecast_commit: kpis.forecast_commit,
                     forecast_best_case: kpis.forecast_best_case,
                     forecast_weighted: kpis.forecast_weighted}};
    };
    const withTarget = (period) => {
      const target = targetOf(period);
      return pick({...scopeOf(period, 0), targets: target.target === null ? {}
                                                   : {revenue_won: target}});
    };
    const teamReps = new Set(members.filter((s) => s.metric.team === team).map((s) => s.metric.rep));
    const monthReps = (scopes['month/0'] || {reps: {}}).reps;
    const reps = Object.entries(monthReps)
      .filter(([rep]) => !team || teamReps.has(rep))
      .map(([rep, k]) => ({rep, revenue_won: k.revenue_won ?? 0, deals_won: k.deals_won ?? 0}));
    const byType = Object.fromEntries(ACTIVITY_TYPES.map((t) => [t, 0]));
    for (const sample of activity) {
      if (!team || sample.metric.team === team) {
        byType[sample.metric.activity_type] = (byType[sample.metric.activity_type] || 0) + value(sample);
      }
    }
    // time() is a scalar: [time, "value"]; the newer of the two freshness stamps decides.
    const stamps = [...counted, ...latest].map(value);
    const secondsAgo = stamps.length ? Math.max(0, Number(now[1]) - Math.max(...stamps)) : null;
    const meta = info[0] ? info[0].metric : {};
    const asOfSeconds = asOf[0] ? value(asOf[0]) : Date.now() / 1000;
    const workerCount = workers[0] ? value(workers[0]) : 0;
    return {
      asOf: new Date(asOfSeconds * 1000).toISOString(),
      timezone: meta.timezone || 'UTC',
      currency: meta.currency || 'USD',
      teams: [...teams].sort(),
      unknownTeam: Boolean(team && !teams.has(team)),
      day: withTarget('day'),
      month: withTarget('month'),
      prevMonth: pick(scopeOf('month', 1)),
      stages: Boolean(stages[0] && value(stages[0]) > 0),
      leaderboard: leaderboard(reps),
      live: {minutes: 60, total: Object.values(byType).reduce((a, b) => a + b, 0),
             byType, perMinute: null},
      freshness: {secondsAgo, lastEventAt: latest[0] ? new Date(value(latest[0]) * 1000).toISOString() : null},
      names: {reps: Object.fromEntries(repInfo.map((s) => [s.metric.rep, s.metric.rep_name])),
              teams: Object.fromEntries(teamInfo.map((s) => [s.metric.team, s.metric.team_name]))},
      source: {
        mode: 'prometheus',
        text: `Prometheus ${options.prom} · ${workerCount} worker${workerCount === 1 ? '' : 's'}`,
        partial: false,
      },
    };
  }

  // -- rendering --------------------------------------------------------------------------------

  function setKpi(name, kind, value, currency) {
    for (const el of document.querySelectorAll(`[data-kpi="${name}"]`)) {
      el.dataset.value = value === null || value === undefined ? 'null' : String(value);
      el.textContent = format(kind, value, currency);
    }
  }

  // The verdict on a target's pace, in words (and a sign) so that it does not rest on colour:
  // reached (attainment ≥ 100 %), on pace (pace ≥ 1: at or past where the target should be by
  // now), behind, or none (no target, or nothing expected yet at the window's first instant).
  const VERDICTS = {
    reached: '✓ target reached', 'on-pace': '▲ on pace', behind: '▼ behind', none: '',
  };

  function verdict(scope) {
    if (scope.target === null) return 'none';
    if (scope.attainment !== null && scope.attainment >= 1) return 'reached';
    if (scope.pace === null) return 'none';
    return scope.pace >= 1 ? 'on-pace' : 'behind';
  }

  function renderTarget(period, scope, snapshot) {
    const box = document.querySelector(`[data-target="${period}"]`);
    const fill = box.querySelector('.fill');
    const marker = box.querySelector('.pace');
    const text = box.querySelector('.target-text');
    const word = box.querySelector('.verdict');
    const state = verdict(scope);
    box.dataset.state = state;
    word.dataset.state = state;
    word.dataset.value = scope.pace === null ? 'null' : String(scope.pace);
    word.textContent = VERDICTS[state];
    setKpi(`${period}.revenue_won.expected`, 'money', scope.expected, snapshot.currency);
    const target = scope.target;
    if (target === null) {
      box.classList.add('none');
      text.dataset.value = 'null';
      text.textContent = 'no target set';
      return;
    }
    box.classList.remove('none');
    const attainment = scope.attainment;
    fill.style.width = `${Math.min(100, Math.max(0, (attainment || 0) * 100))}%`;
    // The marker: where the period's target should be by now (the engine's expected).
    const share = scope.expected !== null && target > 0 ? scope.expected / target : null;
    marker.style.display = share === null ? 'none' : 'block';
    if (share !== null) {
      marker.style.left = `calc(${Math.min(1, Math.max(0, share)) * 100}% - 0.2rem)`;
      marker.dataset.share = String(share);
    }
    text.dataset.value = attainment === null ? 'null' : String(attainment);
    text.textContent = `${format('percent', attainment)} of ${format('money', target, snapshot.currency)} target`;
  }

  // The month's forecast against the month's revenue target: three bars on one scale, with a
  // line where the target is.
  function renderForecast(scope, snapshot) {
    const c = snapshot.currency;
    const rows = {commit: scope.forecast_commit, best_case: scope.forecast_best_case,
                  weighted: scope.forecast_weighted};
    const target = scope.target;
    const scale = Math.max(target || 0, ...Object.values(rows).map((v) => v || 0)) * 1.08 || 1;
    for (const [name, amount] of Object.entries(rows)) {
      setKpi(`forecast.${name}`, 'money', amount, c);
      const row = document.querySelector(`[data-forecast="${name}"]`);
      row.querySelector('.fc-fill').style.width = `${Math.max(0, (amount || 0) / scale) * 100}%`;
      row.classList.toggle('over', target !== null && amount !== null && amount >= target);
      const goal = row.querySelector('.fc-goal');
      goal.style.display = target === null ? 'none' : 'block';
      if (target !== null) goal.style.left = `calc(${(target / scale) * 100}% - 0.15rem)`;
    }
    const text = document.querySelector('[data-kpi="forecast.attainment"]');
    const attainment = scope.forecast_attainment;
    text.dataset.value = attainment === null ? 'null' : String(attainment);
    text.textContent = target === null ? 'no target set'
      : `Weighted: ${format('percent', attainment)} of ${format('money', target, c)} target`;
  }

  function renderTrend(name, now, before) {
    const el = document.querySelector(`[data-trend="${name}"]`);
    el.classList.remove('up', 'down', 'flat');
    const arrow = el.querySelector('.arrow');
    const delta = el.querySelector('.delta');
    if (now === null || before === null) {
      arrow.textContent = '';
      delta.textContent = '';
      el.dataset.direction = 'none';
      return;
    }
    const points = (now - before) * 100;
    const direction = points > 0.05 ? 'up' : points < -0.05 ? 'down' : 'flat';
    el.classList.add(direction);
    el.dataset.direction = direction;
    arrow.textContent = {up: '▲', down: '▼', flat: '▶'}[direction];
    const sign = points > 0 ? '+' : points < 0 ? '−' : '±';
    delta.textContent = `${sign}${Math.abs(points).toFixed(1)} pp`;
  }

  function renderLeaderboard(snapshot) {
    const list = document.getElementById('leaderboard');
    list.style.setProperty('--rows', String(options.top));
    list.replaceChildren();
    if (!snapshot.leaderboard.length) {
      const li = document.createElement('li');
      li.innerHTML = '<span class="empty">No rep activity this month yet</span>';
      list.append(li);
      return;
    }
    const best = Math.max(...snapshot.leaderboard.map((r) => r.revenue_won), 1);
    snapshot.leaderboard.forEach((row, index) => {
      const li = document.createElement('li');
      li.dataset.rep = row.rep;
      const rank = Object.assign(document.createElement('span'), {className: 'rank', textContent: index + 1});
      const rep = Object.assign(document.createElement('span'), {className: 'rep',
                                                                 textContent: repName(snapshot, row.rep)});
      rep.title = row.rep;
      const bar = Object.assign(document.createElement('span'), {className: 'lb-bar'});
      bar.style.width = `${Math.max(0, row.revenue_won / best) * 100}%`;
      const revenue = Object.assign(document.createElement('span'), {className: 'num revenue'});
      revenue.dataset.kpi = 'rep.revenue_won';
      revenue.dataset.value = String(row.revenue_won);
      revenue.textContent = format('money', row.revenue_won, snapshot.currency);
      const deals = Object.assign(document.createElement('span'), {className: 'num deals'});
      deals.dataset.kpi = 'rep.deals_won';
      deals.dataset.value = String(row.deals_won);
      deals.textContent = format('count', row.deals_won);
      li.append(bar, rank, rep, revenue, deals);
      list.append(li);
    });
    // Never show half a row: drop the rows that do not fit the panel.
    for (const li of [...list.children]) {
      // (1 px of slack: offsets are rounded, and a row that fits exactly must stay.)
      if (li.offsetTop + li.offsetHeight > list.clientHeight + 1) li.remove();
    }
  }

  // Shrink the numbers of a tile when any of them sticks out of the tile's content box
  // (a big month, a long currency format).
  function overflows(tile, numbers) {
    const box = tile.getBoundingClientRect();
    const style = getComputedStyle(tile);
    const left = box.left + parseFloat(style.paddingLeft) - 1;
    const right = box.right - parseFloat(style.paddingRight) + 1;
    return numbers.some((el) => {
      const range = document.createRange();
      range.selectNodeContents(el);
      const text = range.getBoundingClientRect();
      return text.left < left || text.right > right;
    });
  }

  function fitTiles() {
    for (const tile of document.querySelectorAll('.tile')) {
      const numbers = [...tile.querySelectorAll('.big, .mid')];
      numbers.forEach((el) => { el.style.fontSize = ''; });
      const sizes = numbers.map((el) => parseFloat(getComputedStyle(el).fontSize));
      for (let scale = 0.95; overflows(tile, numbers) && scale > 0.3; scale -= 0.05) {
        numbers.forEach((el, i) => { el.style.fontSize = `${sizes[i] * scale}px`; });
      }
    }
  }

  function renderLive(snapshot) {
    const live = snapshot.live;
    document.getElementById('live-window').textContent =
      live.minutes === 60 ? 'last hour' : `last ${live.minutes} min`;
    setKpi('live.total', 'count', live.total);
    const box = document.getElementById('live-types');
    const most = Math.max(...ACTIVITY_TYPES.map((t) => live.byType[t] || 0), 1);
    box.replaceChildren(...ACTIVITY_TYPES.map((type) => {
      const row = document.createElement('div');
      row.className = 'live-type';
      const n = live.byType[type] || 0;
      row.innerHTML = `<span class="name"></span><span class="track"><div></div></span>`
        + `<span class="n" data-kpi="live.${type}"></span>`;
      row.querySelector('.name').textContent = type;
      row.querySelector('.track div').style.width = `${(n / most) * 100}%`;
      const count = row.querySelector('.n');
      count.dataset.value = String(n);
      count.textContent = format('count', n);
      return row;
    }));
    const spark = document.getElementById('spark');
    if (!live.perMinute || !live.perMinute.length) {
      spark.classList.add('none');
      return;
    }
    spark.classList.remove('none');
    const peak = Math.max(...live.perMinute, 1);
    spark.replaceChildren(...live.perMinute.map((n) => {
      const bar = document.createElement('div');
      bar.style.height = `${(n / peak) * 100}%`;
      return bar;
    }));
  }

  function renderRotation() {
    const dots = document.getElementById('rotation');
    dots.replaceChildren(...state.rotation.map((scope, i) => {
      const dot = document.createElement('i');
      dot.className = i === state.rotationIndex ? 'on' : '';
      dot.title = scope ? teamName(state.snapshot, scope) : 'company';
      return dot;
    }));
  }

  function render() {
    const snapshot = state.snapshot;
    if (!snapshot) return;
    const c = snapshot.currency;
    document.body.dataset.asOf = snapshot.asOf;
    document.body.dataset.scope = state.scope ? `team:${state.scope}` : 'company';
    document.body.dataset.source = snapshot.source.mode;
    document.getElementById('brand').textContent = options.title;
    document.getElementById('scope').textContent =
      state.scope ? `Team ${teamName(snapshot, state.scope)}${snapshot.unknownTeam ? ' (no data)' : ''}`
                  : 'Company';
    for (const [prefix, scope] of [['day', snapshot.day], ['month', snapshot.month],
                                   ['prev_month', snapshot.prevMonth]]) {
      setKpi(`${prefix}.revenue_won`, 'money', scope.revenue_won, c);
      setKpi(`${prefix}.deals_won`, 'count', scope.deals_won);
      setKpi(`${prefix}.leads_qualified`, 'count', scope.leads_qualified);
      setKpi(`${prefix}.activities`, 'count', scope.activities);
      setKpi(`${prefix}.win_rate`, 'percent', scope.win_rate);
      setKpi(`${prefix}.lead_conversion_rate`, 'percent', scope.lead_conversion_rate);
    }
    renderTarget('day', snapshot.day, snapshot);
    renderTarget('month', snapshot.month, snapshot);
    document.querySelector('.side').classList.toggle('no-forecast', !snapshot.stages);
    renderForecast(snapshot.month, snapshot);
    renderTrend('win_rate', snapshot.month.win_rate, snapshot.prevMonth.win_rate);
    renderTrend('lead_conversion_rate', snapshot.month.lead_conversion_rate,
                snapshot.prevMonth.lead_conversion_rate);
    renderLeaderboard(snapshot);
    renderLive(snapshot);
    renderRotation();
    fitTiles();
    const asOf = zoneFormat(snapshot.timezone, {hour: '2-digit', minute: '2-digit', second: '2-digit'})
      .format(new Date(snapshot.asOf));
    const source = document.getElementById('source');
    source.dataset.mode = snapshot.source.mode;
    source.innerHTML = '';
    if (snapshot.source.partial) {
      const warn = Object.assign(document.createElement('span'), {className: 'partial',
        textContent: 'PARTIAL: this worker does not hold every partition (use Prometheus mode) · '});
      source.append(warn);
    }
    source.append(`Source: ${snapshot.source.text} · as of ${asOf} · ${snapshot.timezone} · `
                  + `${c} · every ${options.refresh} s`);
    tickClock();
  }

  // -- freshness and the clock (every second, between polls) --------------------------------------

  function tickClock() {
    const snapshot = state.snapshot;
    const zone = snapshot ? snapshot.timezone : undefined;
    const now = new Date();
    document.getElementById('clock-time').textContent =
      zoneFormat(zone, {hour: '2-digit', minute: '2-digit'}).format(now);
    document.getElementById('clock-date').textContent =
      zoneFormat(zone, {weekday: 'short', day: 'numeric', month: 'short'}).format(now);
    const text = document.getElementById('freshness-text');
    const banner = document.getElementById('banner');
    const bannerText = document.getElementById('banner-text');
    let stale = false;
    let message;
    if (state.error) {
      message = `Cannot load data: ${state.error}`;
      bannerText.textContent = `NO DATA — ${state.error}`;
      document.body.dataset.state = 'error';
      text.dataset.value = 'null';
    } else if (!snapshot) {
      message = 'connecting…';
      document.body.dataset.state = 'loading';
    } else if (snapshot.freshness.secondsAgo === null) {
      stale = true;
      message = 'No events yet';
      text.dataset.value = 'null';
    } else {
      const seconds = snapshot.freshness.secondsAgo + (Date.now() - state.receivedAt) / 1000;
      stale = seconds > options.stale;
      text.dataset.value = seconds.toFixed(1);
      message = `Last event ${ago(seconds)}`;
      if (stale) message += ` — stale after ${ago(options.stale).replace(' ago', '')}`;
    }
    if (snapshot && !state.error) {
      document.body.dataset.state = stale ? 'stale' : 'ok';
      bannerText.textContent = snapshot.freshness.secondsAgo === null
        ? 'NO EVENTS RECEIVED — numbers are not live'
        : `NO NEW EVENTS FOR ${ago(snapshot.freshness.secondsAgo
            + (Date.now() - state.receivedAt) / 1000).replace(' ago', '').toUpperCase()}`
          + ' — numbers may be out of date';
    }
    document.body.classList.toggle('stale', stale);
    document.body.classList.toggle('error', Boolean(state.error));
    banner.hidden = !(stale || state.error);
    text.textContent = message;
  }

  // -- the loop ---------------------------------------------------------------------------------

  async function refresh() {
    const load = options.source === 'prometheus' ? loadPrometheus : loadWorker;
    const scope = state.scope;
    try {
      const snapshot = await load(scope);
      if (scope !== state.scope) return;  // rotated meanwhile: the next poll shows the new scope
      state.snapshot = snapshot;
      state.receivedAt = Date.now();
      state.error = null;
      if (options.rotate > 0) {
        const rotation = [...snapshot.teams, null];
        if (rotation.join('\u0000') !== state.rotation.join('\u0000')) {
          state.rotation = rotation;
          state.rotationIndex = rotation.indexOf(state.scope);
        }
      }
      render();
    } catch (err) {
      state.error = err && err.message ? err.message : String(err);
      tickClock();
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  // One polling loop at a time: a rotation starts a new generation and the old loop ends.
  let generation = 0;
  async function poll(mine) {
    await refresh();
    if (mine === generation) state.timer = setTimeout(() => poll(mine), options.refresh * 1000);
  }

  function rotate() {
    if (!state.rotation.length) return;
    state.rotationIndex = (state.rotationIndex + 1) % state.rotation.length;
    state.scope = state.rotation[state.rotationIndex];
    renderRotation();
    clearTimeout(state.timer);
    generation += 1;
    poll(generation);
  }

  document.body.dataset.mode = options.source;
  window.addEventListener('resize', render);
  if (options.rotate > 0) setInterval(rotate, options.rotate * 1000);
  setInterval(tickClock, 1000);
  tickClock();
  poll(generation);
})();
