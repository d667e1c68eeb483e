#!/usr/bin/env node
// Sends a chat message from a box's page the way a person would (type, press Enter) and
// waits for the page to show it, which it does only once the box has echoed it back on
// the room's event stream.
//
//   node firmware/cambox/tests/browser/chat_page.mjs <base-url> <text>
//
// Prints one JSON line: {room, shown, rooms: [room ids on offer], errors}. Exits 0 when
// the message was shown, else 1.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from './chromium.mjs';

const [base, text] = process.argv.slice(2);
if (!base || !text) {
  process.stderr.write('usage: node chat_page.mjs <base-url> <text>\n');
  process.exit(2);
}

const userDataDir = await mkdtemp(join(tmpdir(), 'cambox-chromium-'));
const errors = [];
let result = { shown: false };
let context = null;
try {
  context = await launch(userDataDir);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(new URL('/', base).href, { waitUntil: 'load' });
  const room = page.getByRole('combobox', { name: 'Chat room' });
  await page.waitForFunction(() => document.getElementById('chat-room').options.length > 0, null, { timeout: 15000 });
  const input = page.getByRole('textbox', { name: 'Message' });
  await input.fill(text);
  await input.press('Enter');
  await page.locator('#chat-log li', { hasText: text }).waitFor({ timeout: 15000 });
  result = {
    room: await room.inputValue(),
    rooms: await page.$$eval('#chat-room option', (os) => os.map((o) => o.value)),
    shown: true,
    cleared: (await input.inputValue()) === '',
  };
} catch (e) {
  errors.push(e.message || String(e));
} finally {
  if (context) await context.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}
process.stdout.write(JSON.stringify({ ...result, errors }) + '\n');
process.exit(result.shown ? 0 : 1);
