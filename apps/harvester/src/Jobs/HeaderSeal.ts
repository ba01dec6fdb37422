/**
 * HeaderSeal — a job's sensitive request headers (Authorization, cookies, API keys: `Domain.isSensitiveHeader`)
 * sealed at rest under `HARVESTER_SECRET_KEY`, so that the instance that resumes a job after a restart, or another
 * instance sharing the database and the key, sends them too.
 *
 * Without a key they are stored redacted only and live in the memory of the instance that created the job: another
 * instance, or the same one restarted, sends the job's requests without them (and says so). With a key they are
 * stored twice: redacted in the job's options (what the API shows) and sealed in `jobs.secrets`, which only the
 * engine reads. An instance that cannot open a job's sealed headers (no key, another key) does not run the job: its
 * requests would go out without their credentials and fail for good.
 *
 * Format: `v1.<base64url(iv (12 bytes) | ciphertext | tag (16 bytes))>`, AES-256-GCM over the JSON object of the
 * sensitive headers, the job id as additional authenticated data (sealed headers copied to another job do not open);
 * the key is HKDF-SHA256 of the secret (any string of at least 32 characters). Effect has no encryption: node:crypto
 * does the work.
 */
import { Config, ConfigError, Either, Option, Redacted } from "effect"
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto"
import { isSensitiveHeader } from "../Domain.js"

const VERSION = "v1"
const IV_BYTES = 12
const TAG_BYTES = 16
const MIN_SECRET_LENGTH = 32

/** `HARVESTER_SECRET_KEY`: at least 32 characters (e.g. `openssl rand -base64 32`); absent: headers stay in memory. */
export const SecretKeyConfig: Config.Config<Option.Option<Redacted.Redacted>> = Config.option(
  Config.mapOrFail(
    Config.redacted("HARVESTER_SECRET_KEY"),
    (secret) =>
      Redacted.value(secret).length >= MIN_SECRET_LENGTH
        ? Either.right(secret)
        : Either.left(
          ConfigError.InvalidData(
            ["HARVESTER_SECRET_KEY"],
            `expected at least ${MIN_SECRET_LENGTH} characters (for example the output of openssl rand -base64 32)`
          )
        )
  )
)

/** The AES-256 key derived from a secret. */
export interface SealKey {
  readonly _tag: "SealKey"
  readonly bytes: Buffer
}

export const keyOf = (secret: Redacted.Redacted): SealKey => ({
  _tag: "SealKey",
  bytes: Buffer.from(hkdfSync("sha256", Redacted.value(secret), "spindle-harvester", "job-headers/v1", 32))
})

/** The sensitive headers among `headers`. */
export const sensitiveOf = (headers: Readonly<Record<string, string>>): Record<string, string> =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => isSensitiveHeader(name)))

/** The job's sensitive headers sealed, or None when it has none. */
export const seal = (
  key: SealKey,
  jobId: string,
  headers: Readonly<Record<string, string>>
): Option.Option<string> => {
  const sensitive = sensitiveOf(headers)
  if (Object.keys(sensitive).length === 0) return Option.none()
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv("aes-256-gcm", key.bytes, iv)
  cipher.setAAD(Buffer.from(jobId, "utf8"))
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify(sensitive), "utf8"), cipher.final()])
  return Option.some(`${VERSION}.${Buffer.concat([iv, ciphertext, cipher.getAuthTag()]).toString("base64url")}`)
}

const isHeaderRecord = (value: unknown): value is Record<string, string> =>
  typeof value === "object" && value !== null && !Array.isArray(value) &&
  Object.values(value).every((entry) => typeof entry === "string")

/** The headers `seal` sealed for this job, or why they do not open (another key, altered, another job's). */
export const open = (key: SealKey, jobId: string, sealed: string): Either.Either<Record<string, string>, string> => {
  const [version, payload, ...rest] = sealed.split(".")
  if (version !== VERSION || payload === undefined || rest.length > 0) {
    return Either.left(`unknown format (expected ${VERSION}.<base64url>)`)
  }
  const bytes = Buffer.from(payload, "base64url")
  if (bytes.length < IV_BYTES + TAG_BYTES) return Either.left("truncated")
  const decipher = createDecipheriv("aes-256-gcm", key.bytes, bytes.subarray(0, IV_BYTES))
  decipher.setAAD(Buffer.from(jobId, "utf8"))
  decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES))
  return Either.try({
    try: () =>
      Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString(
        "utf8"
      ),
    catch: () => "sealed with another key, altered, or another job's"
  }).pipe(
    Either.flatMap((text) =>
      Either.try({ try: (): unknown => JSON.parse(text), catch: () => "not a JSON object" }).pipe(
        Either.filterOrLeft(isHeaderRecord, () => "not an object of header values")
      )
    )
  )
}
