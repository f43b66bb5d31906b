import { parseOptions, type Options } from '@node-rs/argon2'
import t from 'tap'
import { OWASP_ARGON2ID, createPasswordHasher, hashNeedsUpgrade } from '../../src/passwords.js'

const hasher = createPasswordHasher()

t.test('the default hasher uses OWASP argon2id parameters', async (t) => {
  const hash = await hasher.hash('correct horse battery staple')
  t.match(hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/)
  t.notOk(hash.includes('correct horse'), 'the password is not in the hash')
  t.not(await hasher.hash('correct horse battery staple'), hash, 'a new salt every time')
  t.match(OWASP_ARGON2ID, { memoryCost: 19456, timeCost: 2, parallelism: 1 })
})

t.test('verify', async (t) => {
  const hash = await hasher.hash('correct horse battery staple')
  t.equal(await hasher.verify(hash, 'correct horse battery staple'), true, 'the right password')
  t.equal(await hasher.verify(hash, 'correct horse battery stapl'), false, 'a wrong password')
  t.equal(await hasher.verify(hash, 'Correct horse battery staple'), false, 'case matters')
  t.equal(await hasher.verify(hash, ''), false, 'an empty password')
  for (const garbage of ['', 'not a hash', '$argon2id$v=19$m=19456,t=2,p=1$', '$2b$10$abcdefghijklmnopqrstuv', hash.slice(0, -5)]) {
    t.equal(await hasher.verify(garbage, 'correct horse battery staple'), false, `garbage hash ${JSON.stringify(garbage)}: false, no throw`)
  }
})

t.test('passwords are NFKC-normalized', async (t) => {
  const composed = 'caf\u00e9-p\u00e4ssword'
  const decomposed = 'cafe\u0301-pa\u0308ssword'
  t.not(composed, decomposed, 'the two spellings differ as strings')
  const hash = await hasher.hash(composed)
  t.equal(await hasher.verify(hash, decomposed), true, 'the decomposed spelling matches a composed hash')
  t.equal(await hasher.verify(await hasher.hash(decomposed), composed), true, 'and the other way round')
  t.equal(await hasher.verify(hash, 'cafe-passwort'), false, 'a different password still fails')
  t.equal(await hasher.verify(await hasher.hash('\uff41\uff42\uff43password'), 'abcpassword'), true, 'compatibility forms (fullwidth) match too')
})

t.test('verifyAgainstDecoy resolves false after doing the work', async (t) => {
  t.equal(await hasher.verifyAgainstDecoy('any password'), false)
  t.equal(await hasher.verifyAgainstDecoy(''), false, 'again, with the decoy hash cached')
})

t.test('custom parameters are recorded in the hash', async (t) => {
  const cheap = createPasswordHasher({ memoryCost: 1024, timeCost: 1, parallelism: 1 })
  const hash = await cheap.hash('password1')
  t.match(hash, /^\$argon2id\$v=19\$m=1024,t=1,p=1\$/)
  t.equal(await hasher.verify(hash, 'password1'), true, 'any hasher verifies a hash by its own parameters')
})

t.test('hashNeedsUpgrade: a hash made with other parameters or another variant', async (t) => {
  const phc = (variant: string, m: number, tt: number, p: number, v = 19) => `$${variant}$v=${v}$m=${m},t=${tt},p=${p}$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g`
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 2, 1), OWASP_ARGON2ID), false, 'the same parameters: no')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 2, 1), {}), false, 'unset options are @node-rs/argon2\'s defaults, OWASP\'s')
  t.equal(hashNeedsUpgrade(phc('argon2id', 4096, 2, 1), OWASP_ARGON2ID), true, 'less memory')
  t.equal(hashNeedsUpgrade(phc('argon2id', 65536, 2, 1), OWASP_ARGON2ID), true, 'more memory (the policy went down: still rehashed, to the policy)')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 1, 1), OWASP_ARGON2ID), true, 'fewer passes')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 3, 1), OWASP_ARGON2ID), true, 'more passes')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 2, 4), OWASP_ARGON2ID), true, 'other lanes')
  t.equal(hashNeedsUpgrade(phc('argon2i', 19456, 2, 1), OWASP_ARGON2ID), true, 'argon2i')
  t.equal(hashNeedsUpgrade(phc('argon2d', 19456, 2, 1), OWASP_ARGON2ID), true, 'argon2d')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 2, 1, 16), OWASP_ARGON2ID), true, 'argon2 version 1.0 (v=16)')
  t.equal(hashNeedsUpgrade(phc('argon2id', 1024, 1, 1), { memoryCost: 1024, timeCost: 1, parallelism: 1 }), false, 'other options, matched')
  t.equal(hashNeedsUpgrade(phc('argon2id', 19456, 2, 1), { memoryCost: 1024, timeCost: 1, parallelism: 1 }), true, 'other options, not matched')
  for (const unreadable of ['', 'not a hash', '$2b$10$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ012', '$argon2id$v=19$m=x,t=2,p=1$', '$scrypt$ln=15,r=8,p=1$salt$hash', 'argon2id$v=19$m=19456,t=2,p=1$']) {
    t.equal(hashNeedsUpgrade(unreadable, OWASP_ARGON2ID), false, `unreadable ${JSON.stringify(unreadable)}: left alone (its verification fails anyway)`)
  }
})

// @node-rs/argon2's Algorithm and Version are ambient const enums, which this build cannot import: their values.
const ARGON2I: Options['algorithm'] = 1
const VERSION_0X10: Options['version'] = 0

t.test('hashNeedsUpgrade against hashes @node-rs/argon2 really made', async (t) => {
  // The hasher's threads make hashes with each option; parseOptions, the library's own reading, is the reference.
  const cheap = { memoryCost: 1024, timeCost: 1, parallelism: 1 }
  const hashWith = async (options: Options): Promise<string> => {
    const hasher = createPasswordHasher(options)
    t.teardown(() => hasher.stopThreads())
    return hasher.hash('password1')
  }
  const made = {
    cheap: await hashWith(cheap),
    cheapArgon2i: await hashWith({ ...cheap, algorithm: ARGON2I }),
    cheapShortOutput: await hashWith({ ...cheap, outputLen: 16 }),
    cheapVersion10: await hashWith({ ...cheap, version: VERSION_0X10 })
  }
  t.equal(hashNeedsUpgrade(made.cheap, cheap), false, 'a hash made with the options: no')
  t.equal(hashNeedsUpgrade(made.cheap, OWASP_ARGON2ID), true, 'against OWASP\'s: yes')
  t.equal(hashNeedsUpgrade(made.cheapArgon2i, cheap), true, 'argon2i made with the same costs: yes')
  t.equal(hashNeedsUpgrade(made.cheapVersion10, cheap), true, 'version 0x10: yes')
  t.match(made.cheapArgon2i, /^\$argon2i\$v=19\$m=1024,t=1,p=1\$/, 'the option took effect')
  t.match(made.cheapVersion10, /^\$argon2id\$v=16\$/)
  t.equal(parseOptions(made.cheapShortOutput).outputLen, 16, 'the output length is in the hash, by its length')
  t.equal(hashNeedsUpgrade(made.cheapShortOutput, cheap), true, 'a 16-byte output where 32 are made now: yes')
  t.equal(hashNeedsUpgrade(made.cheapArgon2i, { ...cheap, algorithm: ARGON2I }), false,
    'a hasher configured for argon2i does not re-hash its own hashes at every login')
})

t.test('needsRehash: the hasher\'s own parameters', async (t) => {
  const cheap = createPasswordHasher({ memoryCost: 1024, timeCost: 1, parallelism: 1 })
  t.teardown(() => cheap.stopThreads())
  const cheapHash = await cheap.hash('password1')
  const owaspHash = await hasher.hash('password1')
  t.equal(cheap.needsRehash(cheapHash), false, 'its own hash: no')
  t.equal(hasher.needsRehash(owaspHash), false)
  t.equal(hasher.needsRehash(cheapHash), true, 'the OWASP hasher upgrades a cheaper hash')
  t.equal(cheap.needsRehash(owaspHash), true, 'and a hasher moved to other parameters re-hashes to them')
  t.equal(hasher.needsRehash('garbage'), false, 'an unreadable hash: no')
  t.equal(hasher.needsRehash(owaspHash.replace('$argon2id$', '$argon2i$')), true, 'another variant: yes')
})
