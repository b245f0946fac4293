// The official TypeScript MCP SDK server on Express, as users deploy it
// (createMcpExpressApp, so express.json() reads the bodies), for toolgate's
// integration tests.
//
//   node server.mjs [--json] [--compression]
//
// Prints `listening PORT` once it accepts connections on 127.0.0.1.
// --json: stateless, answers with JSON (enableJsonResponse); otherwise
// sessions and SSE answers. --compression: Express's compression()
// middleware, which gzips answers over 1 KiB for clients that accept it.

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import compression from 'compression';
import { randomUUID } from 'node:crypto';
import * as z from 'zod/v4';

const flags = new Set(process.argv.slice(2));
const json = flags.has('--json');

function mcpServer() {
  const server = new McpServer({ name: 'typescript-upstream', version: '1.0.0' });
  server.registerTool(
    'echo',
    { description: 'Repeat the text', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text: `echo: ${text}` }] }),
  );
  server.registerTool('delete_database', { description: 'Drop every table' }, async () => ({
    content: [{ type: 'text', text: 'database deleted' }],
  }));
  // Enough tools that a list answer is over compression()'s 1 KiB threshold.
  for (let i = 0; i < 12; i++) {
    server.registerTool(
      `report_${i}`,
      { description: `Report number ${i}, summarised over the last thirty days of activity` },
      async () => ({ content: [{ type: 'text', text: `report ${i}` }] }),
    );
  }
  server.registerResource('passwd', 'file:///etc/passwd', { description: 'Not for everyone' }, async (uri) => ({
    contents: [{ uri: uri.href, text: 'root:x:0:0' }],
  }));
  server.registerResource('readme', 'file:///public/readme.md', { description: 'For everyone' }, async (uri) => ({
    contents: [{ uri: uri.href, text: '# readme' }],
  }));
  server.registerPrompt('greet', { description: 'Say hello' }, () => ({
    messages: [{ role: 'user', content: { type: 'text', text: 'Hello!' } }],
  }));
  server.registerPrompt('admin_prompt', { description: 'For admins' }, () => ({
    messages: [{ role: 'user', content: { type: 'text', text: 'sudo' } }],
  }));
  return server;
}

const app = createMcpExpressApp();
if (flags.has('--compression')) {
  app.use(compression());
}

const sessions = {};

app.post('/mcp', async (req, res) => {
  if (json) {
    const server = mcpServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      transport.close();
      server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
    return;
  }
  const id = req.headers['mcp-session-id'];
  let transport = id && sessions[id];
  if (!transport) {
    if (id || !isInitializeRequest(req.body)) {
      res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null });
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sid) => {
        sessions[sid] = transport;
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) delete sessions[transport.sessionId];
    };
    await mcpServer().connect(transport);
  }
  await transport.handleRequest(req, res, req.body);
});

const bySession = async (req, res) => {
  const transport = sessions[req.headers['mcp-session-id']];
  if (!transport) {
    res.status(json ? 405 : 404).end();
    return;
  }
  await transport.handleRequest(req, res);
};
app.get('/mcp', bySession);
app.delete('/mcp', bySession);

const listener = app.listen(0, '127.0.0.1', () => {
  console.log(`listening ${listener.address().port}`);
});
