import { createHash, randomBytes } from 'node:crypto'
import t from 'tap'
import {
  formatRefreshToken, hashSecret, newFamilyId, newRefreshSecret, openSuccessors, parseRefreshToken,
  refreshTokenOf, sealSuccessor, sessionIdOf, type RefreshToken
} from '../../src/refresh-token.js'

const NOW = Date.UTC(2030, 0, 1, 12, 34, 56, 789)
const UUID_V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

function sample (): RefreshToken {
  return { familyId: newFamilyId(), generation: 3, expiresAt: Math.floor(NOW / 1000) + 14 * 86400, secret: newRefreshSecret() }
}

t.test('format and parse round trip', async (t) => {
  const token = sample()
  const text = formatRefreshToken(token)
  t.equal(text, `rt2.${token.familyId}.3.${token.expiresAt}.${token.secret}`)
  t.strictSame(parseRefreshToken(text), token)

  const issued = refreshTokenOf(token.familyId, 0, NOW + 60_500, token.secret)
  t.strictSame(parseRefreshToken(issued), {
    familyId: token.familyId,
    generation: 0,
    expiresAt: Math.floor((NOW + 60_500) / 1000),
    secret: token.secret
  }, 'a token carries its family, generation, expiry in whole seconds and secret')
  t.match(newRefreshSecret(), /^[A-Za-z0-9_-]{43}$/, '256 random bits, base64url')
  t.match(newFamilyId(), /^[A-Za-z0-9_-]{22}$/, '128 random bits, base64url')
  t.not(newRefreshSecret(), newRefreshSecret(), 'every secret is new')
  t.not(newFamilyId(), newFamilyId(), 'every family is new')
  t.strictSame(parseRefreshToken(formatRefreshToken({ ...token, generation: 2 ** 40 })), { ...token, generation: 2 ** 40 }, 'large generations')
})

t.test('parse rejects anything that is not exactly a refresh token', async (t) => {
  const token = sample()
  const valid = formatRefreshToken(token)
  const jwt = [
    Buffer.from('{"alg":"EdDSA","typ":"at+jwt"}').toString('base64url'),
    Buffer.from(`{"sub":"u","sid":"${sessionIdOf(token.familyId)}"}`).toString('base64url'),
    randomBytes(64).toString('base64url')
  ].join('.')
  const at = (segment: number, value: string): string => valid.split('.').map((part, index) => index === segment ? value : part).join('.')
  const cases: Array<[string, string]> = [
    ['an empty string', ''],
    ['a JWT', jwt],
    ['the previous format', `rt1.${sessionIdOf(token.familyId)}.${token.expiresAt}.${token.secret}`],
    ['another prefix', valid.replace(/^rt2\./, 'rt3.')],
    ['an upper-case prefix', valid.replace(/^rt2\./, 'RT2.')],
    ['no prefix', valid.slice(4)],
    ['a 21-character family', at(1, token.familyId.slice(1))],
    ['a 23-character family', at(1, `${token.familyId}A`)],
    ['a family with a non-base64url character', at(1, `${token.familyId.slice(1)}+`)],
    ['a session id for a family', at(1, sessionIdOf(token.familyId))],
    ['a negative generation', at(2, '-1')],
    ['a generation with a leading zero', at(2, '01')],
    ['a fractional generation', at(2, '1.5')],
    ['a generation of 16 digits', at(2, '1234567890123456')],
    ['an empty generation', at(2, '')],
    ['a non-numeric expiry', at(3, 'soon')],
    ['a negative expiry', at(3, `-${token.expiresAt}`)],
    ['an expiry of 13 digits', at(3, '1234567890123')],
    ['an empty expiry', at(3, '')],
    ['a 42-character secret', at(4, token.secret.slice(1))],
    ['a 44-character secret', at(4, `${token.secret}A`)],
    ['a secret with a non-base64url character', at(4, `${token.secret.slice(1)}+`)],
    ['an extra trailing segment', `${valid}.x`],
    ['a trailing dot', `${valid}.`],
    ['a leading dot', `.${valid}`],
    ['a doubled dot', valid.replace('rt2.', 'rt2..')],
    ['surrounding whitespace', ` ${valid} `],
    ['a trailing newline', `${valid}\n`]
  ]
  for (const [name, text] of cases) {
    t.equal(parseRefreshToken(text), undefined, name)
  }
  t.ok(parseRefreshToken(valid), 'while the original parses')
})

t.test('sessionIdOf: a UUID derived from the family, revealing nothing of it', async (t) => {
  const family = newFamilyId()
  t.match(sessionIdOf(family), UUID_V8, 'a version-8 UUID')
  t.equal(sessionIdOf(family), sessionIdOf(family), 'deterministic: every instance finds the same session')
  const ids = new Set(Array.from({ length: 1000 }, () => sessionIdOf(newFamilyId())))
  t.equal(ids.size, 1000, 'distinct for distinct families')
  t.notOk(sessionIdOf(family).replaceAll('-', '').includes(Buffer.from(family, 'base64url').toString('hex').slice(0, 8)),
    'the family\'s bytes do not show in it')
})

t.test('sealSuccessor and openSuccessors', async (t) => {
  const secrets = Array.from({ length: 5 }, () => newRefreshSecret())
  const chain = secrets.slice(1).map((next, index) => sealSuccessor(secrets[index]!, next))
  const currentHash = hashSecret(secrets.at(-1)!)

  t.equal(openSuccessors(secrets[3]!, chain.slice(3), currentHash), secrets[4], 'one link')
  t.equal(openSuccessors(secrets[0]!, chain, currentHash), secrets[4], 'four links, each opened with the secret the one before gave')
  t.equal(openSuccessors(secrets[4]!, [], currentHash), secrets[4], 'no link: the current token itself')
  t.match(chain[0], /^[A-Za-z0-9_-]{43}$/, 'a sealed successor is 43 characters')
  t.not(sealSuccessor(newRefreshSecret(), secrets[1]!), chain[0], 'another old secret seals it differently')

  t.equal(openSuccessors(newRefreshSecret(), chain, currentHash), undefined, 'another secret does not open it')
  t.equal(openSuccessors(hashSecret(secrets[0]!), chain, currentHash), undefined, 'the stored hash does not open it')
  t.equal(openSuccessors(secrets[1]!, chain, currentHash), undefined, 'a link too many opens to nothing')
  t.equal(openSuccessors(secrets[0]!, chain.slice(1), currentHash), undefined, 'a link missing opens to nothing')
  t.equal(openSuccessors(secrets[0]!, chain, hashSecret(newRefreshSecret())), undefined, 'it opens only to the token whose hash is given')

  const bytes = Buffer.from(chain[1]!, 'base64url')
  for (let index = 0; index < bytes.length; index += 7) {
    const tampered = Buffer.from(bytes)
    tampered[index]! ^= 1
    t.equal(openSuccessors(secrets[0]!, [chain[0]!, tampered.toString('base64url'), ...chain.slice(2)], currentHash), undefined,
      `a flipped bit in byte ${index} of a link is detected`)
  }
  for (const junk of ['', 'x', '!!!!', bytes.subarray(0, bytes.length - 1).toString('base64url'), Buffer.concat([bytes, Buffer.from([0])]).toString('base64url')]) {
    t.equal(openSuccessors(secrets[0]!, [chain[0]!, junk, ...chain.slice(2)], currentHash), undefined, `junk ${JSON.stringify(junk)} opens to undefined, without throwing`)
  }
})

t.test('hashSecret is deterministic base64url SHA-256', async (t) => {
  t.equal(hashSecret('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0', 'the FIPS 180-2 "abc" vector')
  const value = newRefreshSecret()
  t.equal(hashSecret(value), hashSecret(value), 'deterministic')
  t.equal(hashSecret(value), createHash('sha256').update(value).digest('base64url'))
  t.match(hashSecret(value), /^[A-Za-z0-9_-]{43}$/)
  t.not(hashSecret(value), hashSecret(newRefreshSecret()))
  t.not(hashSecret(value), value)
})
