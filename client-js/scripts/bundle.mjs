#!/usr/bin/env node
// Builds dist/rtgate.esm.js: the client's ES modules (src/) in one file, for a page that loads it
// with <script type="module"> and no bundler. No dependencies: the modules are plain ES modules
// with relative imports only, so each becomes a function scope, evaluated in dependency order,
// whose exports the later ones read; the entry's exports become the file's exports.
//
//   node scripts/bundle.mjs [out]      (npm run build; npm pack runs it as `prepack`)
//
// What a module may contain is checked, not assumed: an import that is not relative, a dynamic
// import, `export *`, an exported `let`/`var` (a live binding a function scope would freeze) or a
// cycle between modules stops the build with an error instead of producing a wrong file.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, posix, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SRC = resolve(here, '../src');
export const ENTRY = 'rtgate.js';
export const OUT = resolve(here, '../dist/rtgate.esm.js');

const IDENT = /^[A-Za-z_$][\w$]*$/;

class BundleError extends Error {}

/** `{ a, b as c }` -> [['a', 'a'], ['b', 'c']] (imported or local name, then the exported/local one). */
function specifiers(list, where) {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const [from, as = from] = s.split(/\s+as\s+/).map((x) => x.trim());
      if (!IDENT.test(from) && from !== 'default') throw new BundleError(`${where}: cannot read \`${s}\``);
      if (!IDENT.test(as) && as !== 'default') throw new BundleError(`${where}: cannot read \`${s}\``);
      return [from, as];
    });
}

/**
 * One module: `imports` [{from: module id, names: [[imported, local]], namespace?}], `exports`
 * [[local, exported]], and `body`, the source without its import and export syntax.
 */
export function parseModule(id, source) {
  const imports = [];
  const exports = [];
  const resolveId = (spec) => {
    if (!spec.startsWith('./') && !spec.startsWith('../')) {
      throw new BundleError(`${id}: imports ${spec}; the client must have no dependencies`);
    }
    return posix.normalize(posix.join(posix.dirname(id), spec));
  };
  let body = source;

  // import { a, b as c } from './x.js';   import x from './x.js';   import * as ns from './x.js';
  body = body.replace(/^import\s*\{([^}]*)\}\s*from\s*'([^']+)';?[^\S\n]*\n?/gm, (_, list, spec) => {
    imports.push({ from: resolveId(spec), names: specifiers(list, id) });
    return '';
  });
  body = body.replace(/^import\s+([A-Za-z_$][\w$]*)\s+from\s*'([^']+)';?[^\S\n]*\n?/gm, (_, name, spec) => {
    imports.push({ from: resolveId(spec), names: [['default', name]] });
    return '';
  });
  body = body.replace(/^import\s*\*\s*as\s+([A-Za-z_$][\w$]*)\s+from\s*'([^']+)';?[^\S\n]*\n?/gm, (_, name, spec) => {
    imports.push({ from: resolveId(spec), names: [], namespace: name });
    return '';
  });
  if (/^import[\s{*'"]/m.test(body)) throw new BundleError(`${id}: an import the bundler cannot read`);
  const code = body.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, ''); // comments aside
  if (/\bimport\s*\(/.test(code)) throw new BundleError(`${id}: dynamic import() is not supported`);

  // export { a, b as c } from './x.js';  (a re-export: an import plus an export)
  body = body.replace(/^export\s*\{([^}]*)\}\s*from\s*'([^']+)';?[^\S\n]*\n?/gm, (_, list, spec) => {
    const names = specifiers(list, id);
    const from = resolveId(spec);
    const locals = names.map(([imported], i) => [imported, `__reexport_${exports.length + i}`]);
    imports.push({ from, names: locals });
    names.forEach(([, exported], i) => exports.push([locals[i][1], exported]));
    return '';
  });
  // export { a, b as c };
  body = body.replace(/^export\s*\{([^}]*)\};?[^\S\n]*\n?/gm, (_, list) => {
    for (const [local, exported] of specifiers(list, id)) exports.push([local, exported]);
    return '';
  });
  // export default Name;   export default class Name / function Name
  body = body.replace(/^export\s+default\s+([A-Za-z_$][\w$]*)\s*;[^\S\n]*\n?/gm, (_, name) => {
    exports.push([name, 'default']);
    return '';
  });
  body = body.replace(/^export\s+default\s+((?:async\s+)?(?:class|function\*?)\s+([A-Za-z_$][\w$]*))/gm, (_, decl, name) => {
    exports.push([name, 'default']);
    return decl;
  });
  // export class X / export function X / export async function X / export const X
  body = body.replace(/^export\s+((?:async\s+)?(?:class|function\*?|const|let|var)\s+)([^\s=(]+)/gm, (_, decl, name) => {
    if (/^(let|var)\s/.test(decl)) {
      throw new BundleError(`${id}: exported ${decl.trim()} ${name} would lose its live binding`);
    }
    if (!IDENT.test(name)) throw new BundleError(`${id}: cannot read \`export ${decl}${name}\``);
    exports.push([name, name]);
    return decl + name;
  });
  if (/^export\b/m.test(body)) throw new BundleError(`${id}: an export the bundler cannot read`);
  return { id, imports, exports, body };
}

const varName = (id) => `__rtgate_${id.replace(/\.js$/, '').replace(/[^\w$]/g, '_')}`;

/** The modules reachable from `entry`, each after the ones it imports. */
function ordered(srcDir, entry) {
  const modules = new Map();
  const order = [];
  const visiting = new Set();
  const visit = (id, from) => {
    if (modules.has(id)) return;
    if (visiting.has(id)) throw new BundleError(`import cycle through ${id} (from ${from})`);
    visiting.add(id);
    const file = resolve(srcDir, ...id.split('/'));
    if (relative(srcDir, file).startsWith('..') || relative(srcDir, file).includes(`..${sep}`)) {
      throw new BundleError(`${from} imports ${id}, outside ${srcDir}`);
    }
    let source;
    try {
      source = readFileSync(file, 'utf8');
    } catch {
      throw new BundleError(`${from ?? 'entry'}: cannot read ${id}`);
    }
    const mod = parseModule(id, source);
    for (const imp of mod.imports) visit(imp.from, id);
    visiting.delete(id);
    modules.set(id, mod);
    order.push(mod);
  };
  visit(entry, null);
  return order;
}

/** The single-file ES module for `entry` in `srcDir`. */
export function bundle({ srcDir = SRC, entry = ENTRY, banner = '' } = {}) {
  const modules = ordered(srcDir, entry);
  const byId = new Map(modules.map((m) => [m.id, m]));
  const out = [];
  if (banner) out.push(banner);
  for (const mod of modules) {
    const lines = [];
    for (const imp of mod.imports) {
      const dep = byId.get(imp.from);
      if (imp.namespace) {
        lines.push(`const ${imp.namespace} = ${varName(dep.id)};`);
        continue;
      }
      for (const [imported] of imp.names) {
        if (!dep.exports.some(([, exported]) => exported === imported)) {
          throw new BundleError(`${mod.id} imports ${imported} from ${dep.id}, which does not export it`);
        }
      }
      const names = imp.names.map(([imported, local]) => (imported === local ? local : `${imported}: ${local}`));
      lines.push(`const { ${names.join(', ')} } = ${varName(dep.id)};`);
    }
    const members = mod.exports.map(([local, exported]) => (local === exported ? local : `${exported}: ${local}`));
    out.push(
      `// ---- src/${mod.id} ${'-'.repeat(Math.max(0, 88 - mod.id.length))}`,
      `const ${varName(mod.id)} = (() => {`,
      ...lines,
      mod.body.trim(),
      `return Object.freeze({ ${members.join(', ')} });`,
      '})();',
      '',
    );
  }
  const main = byId.get(entry);
  const named = main.exports.filter(([, exported]) => exported !== 'default').map(([, exported]) => exported);
  const hasDefault = main.exports.some(([, exported]) => exported === 'default');
  out.push(
    `const { ${[...named, ...(hasDefault ? ['default: __rtgate_default'] : [])].join(', ')} } = ${varName(entry)};`,
    `export { ${[...named, ...(hasDefault ? ['__rtgate_default as default'] : [])].join(', ')} };`,
    '',
  );
  return out.join('\n');
}

function main() {
  const out = resolve(process.argv[2] ?? OUT);
  const pkg = JSON.parse(readFileSync(resolve(here, '../package.json'), 'utf8'));
  const banner = [
    `// ${pkg.name} ${pkg.version}: the browser client for rtgate in one ES module.`,
    '// Generated from src/ by scripts/bundle.mjs (npm run build); edit src/, not this file.',
    `// License: ${pkg.license}.`,
    '',
  ].join('\n');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, bundle({ banner }));
  const shown = relative(process.cwd(), out);
  console.error(`wrote ${shown.startsWith('..') ? out : shown}`); // stderr: keeps `npm pack --json` parseable
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    main();
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    console.error(`bundle: ${err.message}`);
    process.exit(1);
  }
}
