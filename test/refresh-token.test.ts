import { createHash, randomBytes } from 'node:crypto'
import t from 'tap'
import {
  formatRefreshToken, hashSecret, issueRefreshToken, newSessionId, openSuccessor, parseRefreshToken,
  sealSuccessor, sessionStartedAt, type RefreshToken
} from '../src/refresh-token.js'

const NOW = Date.UTC(2030, 0, 1, 12, 34, 56, 789)
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

function secret (): string {
  return randomBytes(32).toString('base64url')
}

function sample (): RefreshToken {
  return { sessionId: newSessionId(NOW), expiresAt: Math.floor(NOW / 1000) + 14 * 86400, secret: secret() }
}

t.test('format and parse round trip', async (t) => {
  const token = sample()
  const text = formatRefreshToken(token)
  t.equal(text, `rt1.${token.sessionId}.${token.expiresAt}.${token.secret}`)
  t.strictSame(parseRefreshToken(text), token)

  const issued = issueRefreshToken(token.sessionId, NOW + 60_500)
  t.strictSame(parseRefreshToken(issued.token), {
    sessionId: token.sessionId,
    expiresAt: Math.floor((NOW + 60_500) / 1000),
    secret: issued.secret
  }, 'an issued token carries its session, expiry in whole seconds and secret')
  t.match(issued.secret, /^[A-Za-z0-9_-]{43}$/, '256 random bits, base64url')
  t.not(issueRefreshToken(token.sessionId, NOW).secret, issued.secret, 'every secret is new')
})

t.test('parse rejects anything that is not exactly a refresh token', async (t) => {
  const token = sample()
  const valid = formatRefreshToken(token)
  const jwt = [
    Buffer.from('{"alg":"EdDSA","typ":"at+jwt"}').toString('base64url'),
    Buffer.from(`{"sub":"u","sid":"${token.sessionId}"}`).toString('base64url'),
    randomBytes(64).toString('base64url')
  ].join('.')
  const cases: Array<[string, string]> = [
    ['an empty string', ''],
    ['a JWT', jwt],
    ['a JWT-shaped string of three segments', `${token.sessionId}.${token.expiresAt}.${token.secret}`],
    ['another prefix', valid.replace(/^rt1\./, 'rt2.')],
    ['an upper-case prefix', valid.replace(/^rt1\./, 'RT1.')],
    ['no prefix', valid.slice(4)],
    ['a session id that is not a uuid', formatRefreshToken({ ...token, sessionId: 'not-a-uuid' })],
    ['a uuid without dashes', formatRefreshToken({ ...token, sessionId: token.sessionId.replaceAll('-', '') })],
    ['an upper-case uuid', formatRefreshToken({ ...token, sessionId: token.sessionId.toUpperCase() })],
    ['a uuid one digit short', formatRefreshToken({ ...token, sessionId: token.sessionId.slice(1) })],
    ['a uuid with a non-hex digit', formatRefreshToken({ ...token, sessionId: `g${token.sessionId.slice(1)}` })],
    ['a 42-character secret', formatRefreshToken({ ...token, secret: token.secret.slice(1) })],
    ['a 44-character secret', formatRefreshToken({ ...token, secret: `${token.secret}A` })],
    ['a secret with a non-base64url character', formatRefreshToken({ ...token, secret: `${token.secret.slice(1)}+` })],
    ['a non-numeric expiry', valid.replace(`.${token.expiresAt}.`, '.soon.')],
    ['a negative expiry', valid.replace(`.${token.expiresAt}.`, `.-${token.expiresAt}.`)],
    ['an expiry of 13 digits', valid.replace(`.${token.expiresAt}.`, '.1234567890123.')],
    ['an empty expiry', valid.replace(`.${token.expiresAt}.`, '..')],
    ['an extra trailing segment', `${valid}.x`],
    ['a trailing dot', `${valid}.`],
    ['a leading dot', `.${valid}`],
    ['a doubled dot', valid.replace('rt1.', 'rt1..')],
    ['surrounding whitespace', ` ${valid} `],
    ['a trailing newline', `${valid}\n`]
  ]
  for (const [name, text] of cases) {
    t.equal(parseRefreshToken(text), undefined, name)
  }
  t.ok(parseRefreshToken(valid), 'while the original parses')
})

t.test('newSessionId is a UUIDv7 carrying the login time', async (t) => {
  for (const time of [NOW, 0, Date.UTC(2000, 1, 29), 2 ** 48 - 1]) {
    const id = newSessionId(time)
    t.match(id, UUID_V7, `a v7 uuid for ${time}`)
    t.equal(sessionStartedAt(id), time, `carries ${time}`)
  }
  const ids = new Set(Array.from({ length: 100 }, () => newSessionId(NOW)))
  t.equal(ids.size, 100, 'ids of the same millisecond still differ')
  t.ok(newSessionId(NOW) < newSessionId(NOW + 1), 'ids sort by login time')
})

t.test('sealSuccessor and openSuccessor', async (t) => {
  const oldSecret = secret()
  const successor = secret()
  const successorHash = hashSecret(successor)
  const sealed = sealSuccessor(oldSecret, successor)
  t.equal(openSuccessor(oldSecret, sealed, successorHash), successor, 'round trip')
  t.not(sealed, successor, 'the sealed form hides the secret')
  t.not(sealed, hashSecret(successor))
  t.match(sealed, /^[A-Za-z0-9_-]{43}$/, '43 base64url characters, whatever the token')
  t.equal(sealSuccessor(secret(), successor) === sealed, false, 'another old secret seals it differently')

  t.equal(openSuccessor(secret(), sealed, successorHash), undefined, 'another secret does not open it')
  t.equal(openSuccessor(hashSecret(oldSecret), sealed, successorHash), undefined, 'the stored hash does not open it')
  t.equal(openSuccessor(oldSecret, sealed, hashSecret(secret())), undefined, 'it opens only to the successor whose hash is given')

  const bytes = Buffer.from(sealed, 'base64url')
  for (const index of [0, 15, bytes.length - 1]) {
    const tampered = Buffer.from(bytes)
    tampered[index] = tampered[index]! ^ 0x01
    t.equal(openSuccessor(oldSecret, tampered.toString('base64url'), successorHash), undefined, `a flipped bit in byte ${index} is detected`)
  }
  t.equal(openSuccessor(oldSecret, bytes.subarray(0, bytes.length - 1).toString('base64url'), successorHash), undefined, 'truncated')
  t.equal(openSuccessor(oldSecret, Buffer.concat([bytes, Buffer.from([0])]).toString('base64url'), successorHash), undefined, 'extended')
  for (const junk of ['', 'x', 'AAAA', 'not base64 at all!', '!'.repeat(43)]) {
    t.equal(openSuccessor(oldSecret, junk, successorHash), undefined, `junk ${JSON.stringify(junk)} opens to undefined, without throwing`)
  }
})

t.test('hashSecret is deterministic base64url SHA-256', async (t) => {
  t.equal(hashSecret('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0', 'the FIPS 180-2 "abc" vector')
  const value = secret()
  t.equal(hashSecret(value), hashSecret(value), 'deterministic')
  t.equal(hashSecret(value), createHash('sha256').update(value).digest('base64url'))
  t.match(hashSecret(value), /^[A-Za-z0-9_-]{43}$/)
  t.not(hashSecret(value), hashSecret(secret()))
  t.not(hashSecret(value), value)
})
