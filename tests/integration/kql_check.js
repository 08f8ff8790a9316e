// Parses and type-checks KQL with Microsoft's Kusto language service (npm @kusto/language-service-next, pinned in
// package.json; the same parser and binder as Kusto.Language on NuGet), for tests/integration/test_infra_kql.py.
//
// stdin:  {"schema": {"database": name, "tables": {Table: {"columns": {Column: kql type}}}},
//          "queries": [{"name": ..., "text": ...}]}
// stdout: {"package": version, "results": [{"name": ..., "diagnostics": [{"severity", "code", "message", "line",
//          "column", "excerpt", "source"}]}]}
// source "compiler": KustoCode.GetDiagnostics() (syntax and semantics: unknown tables, columns, functions, argument
// types); source "analyzer": KustoCodeService.GetAnalyzerDiagnostics() (advice, e.g. a slower operator).
// One process for every query: loading the service takes most of its time (about 2 s).
"use strict";

const fs = require("fs");
const path = require("path");

const packageDir = path.dirname(require.resolve("@kusto/language-service-next/package.json"));
require(path.join(packageDir, "bridge.js")); // the Bridge.NET runtime the service is compiled against: global Bridge
require(path.join(packageDir, "Kusto.Language.Bridge.js")); // global Kusto
const K = Kusto.Language;

function globalsFor(schema) {
  const tables = Object.entries(schema.tables).map(([table, { columns }]) =>
    new K.Symbols.TableSymbol.$ctor4(table, Object.entries(columns).map(([column, type]) => {
      const scalar = K.Symbols.ScalarTypes.GetSymbol(type);
      if (!scalar) throw new Error(`${table}.${column}: unknown KQL type ${type}`);
      return new K.Symbols.ColumnSymbol(column, scalar, null, null, null, null);
    })));
  return K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.ctor(schema.database, tables));
}

function describe(code, text, diagnostic, source) {
  const line = { v: 0 }, column = { v: 0 };
  const located = diagnostic.HasLocation && code.TryGetLineAndOffset(diagnostic.Start, line, column);
  const start = Math.max(0, diagnostic.Start - 20);
  return {
    severity: diagnostic.Severity, code: diagnostic.Code, message: diagnostic.Message,
    line: located ? line.v : null, column: located ? column.v : null,
    excerpt: diagnostic.HasLocation ? text.slice(start, diagnostic.End + 20) : null, source,
  };
}

function check(globals, { name, text }) {
  const code = K.KustoCode.ParseAndAnalyze(text, globals);
  const diagnostics = Bridge.toArray(code.GetDiagnostics()).map((d) => describe(code, text, d, "compiler"));
  const advice = Bridge.toArray(new K.Editor.KustoCodeService.ctor(code).GetAnalyzerDiagnostics(true));
  return { name, diagnostics: diagnostics.concat(advice.map((d) => describe(code, text, d, "analyzer"))) };
}

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const globals = globalsFor(input.schema);
const version = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8")).version;
process.stdout.write(JSON.stringify({ package: version, results: input.queries.map((q) => check(globals, q)) }));
