// tests/grafana/check.mjs: checks dashboards against Grafana's own published
// types, the @grafana/schema package (pinned in package-lock.json), with tsc.
//
//   node tests/grafana/check.mjs DASHBOARD.json...
//
// Each dashboard becomes a TypeScript module that declares its JSON as
// Grafana's `Dashboard` (the classic dashboard model, schemaVersion 41 and
// older): unknown keys anywhere (excess properties), wrong types, values
// outside an enum (FieldColorModeId, ThresholdsMode, ...), missing required
// keys all fail. Each panel's `options` and `fieldConfig.defaults.custom`
// are further checked against its panel type's own types (timeseries,
// stat, gauge, table, state-timeline): every key we write must be one of
// that panel's, with the right type (keys we leave out are Grafana's
// defaults, so they are optional here). A panel type with no such types
// fails, so a new panel type is not checked by halves unseen.
// Prints tsc's errors and exits 1 on any; prints one line when all pass.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const files = process.argv.slice(2);
if (!files.length) {
  console.error('usage: node tests/grafana/check.mjs DASHBOARD.json...');
  process.exit(2);
}
const PANELS = {
  timeseries: 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen',
  stat: 'stat/panelcfg/x/StatPanelCfg_types.gen',
  gauge: 'gauge/panelcfg/x/GaugePanelCfg_types.gen',
  table: 'table/panelcfg/x/TablePanelCfg_types.gen',
  'state-timeline': 'statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen',
};
const gen = join(here, '.gen');
rmSync(gen, { recursive: true, force: true });
mkdirSync(gen, { recursive: true });
const names = [];
for (const file of files) {
  const d = JSON.parse(readFileSync(file, 'utf8'));
  const name = basename(file, '.json').replace(/[^A-Za-z0-9_]/g, '_');
  const lines = [
    "import type { Dashboard } from '@grafana/schema';",
    // TypeScript's string enums are nominal; JSON carries their values.
    'type Json<T> = T extends string ? `${T}` : T extends (infer U)[] ? Json<U>[] : T extends object ? { [K in keyof T]: Json<T[K]> } : T;',
    'type Partly<T> = T extends (infer U)[] ? Partly<U>[] : T extends object ? { [K in keyof T]?: Partly<T[K]> } : T;',
  ];
  const used = new Set();
  const checks = [];
  (d.panels ?? []).forEach((p, i) => {
    if (p.type === 'row') return;
    const mod = PANELS[p.type];
    const where = `panel ${i} (${JSON.stringify(p.title)}, ${p.type})`;
    if (!mod) {
      checks.push(`// ${where}\nconst unchecked_${i}: 'a panel type without Grafana types here' = ${JSON.stringify(p.type)};`);
      return;
    }
    const alias = p.type.replace(/-/g, '_');
    if (!used.has(p.type)) {
      used.add(p.type);
      lines.push(`import type * as ${alias} from '@grafana/schema/dist/esm/raw/composable/${mod}';`);
    }
    checks.push(`// ${where}\nexport const options_${i}: Partly<Json<${alias}.Options>> = ${JSON.stringify(p.options ?? {}, null, 2)};`);
    const custom = p.fieldConfig?.defaults?.custom;
    if (custom !== undefined) {
      const fc = p.type === 'stat' || p.type === 'gauge' ? '{}' : `Partly<Json<${alias}.FieldConfig>>`;
      checks.push(`export const custom_${i}: ${fc} = ${JSON.stringify(custom, null, 2)};`);
    }
  });
  lines.push(`export const dashboard: Json<Dashboard> = ${JSON.stringify(d, null, 2)};`, ...checks, '');
  writeFileSync(join(gen, `${name}.ts`), lines.join('\n'));
  names.push(`${name}.ts`);
}
writeFileSync(join(gen, 'tsconfig.json'), JSON.stringify({
  compilerOptions: { strict: true, noEmit: true, module: 'esnext', moduleResolution: 'bundler', target: 'es2022',
    skipLibCheck: true, noUnusedLocals: false, types: [] },
  files: names,
}));
const tsc = resolve(here, 'node_modules/typescript/bin/tsc');
try {
  execFileSync(process.execPath, [tsc, '-p', join(gen, 'tsconfig.json'), '--pretty', 'false'], { stdio: ['ignore', 'pipe', 'pipe'] });
} catch (e) {
  process.stdout.write(String(e.stdout));
  process.stderr.write(String(e.stderr));
  console.error(`tests/grafana/check.mjs: ${files.join(', ')} do not match @grafana/schema`);
  process.exit(1);
}
const v = JSON.parse(readFileSync(join(here, 'node_modules/@grafana/schema/package.json'), 'utf8')).version;
console.log(`tests/grafana/check.mjs: ${files.length} dashboards match @grafana/schema ${v}`);
