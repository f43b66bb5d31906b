import t from 'tap'
import { OWASP_ARGON2ID, createPasswordHasher } from '../../src/passwords.js'

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
