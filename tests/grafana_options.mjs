// What Grafana makes of a Prometheus query variable's result: the options of the dropdown.
//
// Why JavaScript: Grafana applies a variable's regex in the browser, with JavaScript's RegExp
// (named groups written (?<name>...), flags after the closing slash), so the tests run the
// dashboards' regex here rather than in Python's `re`, whose syntax differs. The steps follow
// Grafana's own (the Prometheus data source's `query_result` and the variable's regex step):
//
// 1. each series of an instant query becomes one line: the metric name (if any), then
//    `{label="value",...}` with the labels in the order Prometheus sent them and the values
//    unescaped, then ` <value> <timestamp in ms>`;
// 2. a regex written `/.../flags` is used as is; any other string must match the whole line;
// 3. a line the regex does not match is dropped; where a match has a non-empty `value` or
//    `text` group, the option's value is the `value` group (else `text`) and its text the
//    `text` group (else `value`); otherwise the first capture group (of every match, for a
//    global regex), or the whole line;
// 4. options with the same value are kept once (the first).
//
// Input on stdin: {"regex": "...", "result": [<Prometheus instant-query series>...]}.
// Output on stdout: [{"text": "...", "value": "..."}, ...] in the order of the result.

import { readFileSync } from "node:fs";

function line(series) {
  const metric = { ...series.metric };
  let text = metric.__name__ || "";
  delete metric.__name__;
  text += "{" + Object.entries(metric).map(([k, v]) => `${k}="${v}"`).join(",") + "}";
  return text + " " + series.value[1] + " " + series.value[0] * 1000;
}

function toRegExp(source) {
  if (source[0] !== "/") {
    return new RegExp(`^${source}$`);
  }
  const parts = source.match(/^\/(.*?)\/(g?i?m?y?)$/);
  if (!parts) {
    throw new Error(`not a regular expression: ${source}`);
  }
  return new RegExp(parts[1], parts[2]);
}

function matchesOf(text, regex) {
  const found = [];
  regex.lastIndex = 0;
  let m;
  do {
    m = regex.exec(text);
    if (m) {
      found.push(m);
    }
  } while (regex.global && m && m[0] !== "");
  return found;
}

const input = JSON.parse(readFileSync(0, "utf8"));
const regex = input.regex ? toRegExp(input.regex) : null;
const options = [];
for (const series of input.result) {
  let text = line(series);
  let value = text;
  if (regex) {
    const found = matchesOf(value, regex);
    if (!found.length) {
      continue;
    }
    const byValue = found.find((m) => m.groups && m.groups.value);
    const byText = found.find((m) => m.groups && m.groups.text);
    const first = found.find((m) => m.length > 1);
    if (byValue || byText) {
      value = byValue?.groups?.value ?? byText?.groups?.text;
      text = byText?.groups?.text ?? byValue?.groups?.value;
    } else if (found.length > 1 && first) {  // a global regex: one option per match
      for (const m of found) {
        if (!options.some((o) => o.value === m[1])) {
          options.push({ text: m[1], value: m[1] });
        }
      }
      continue;
    } else if (first) {
      text = value = first[1];
    }
  }
  if (!options.some((o) => o.value === value)) {
    options.push({ text, value });
  }
}
process.stdout.write(JSON.stringify(options));
