/**
 * SsrfGuard — refuses targets that resolve to addresses a harvester must not reach on a user's behalf: loopback,
 * private (RFC 1918, carrier-grade NAT, IPv6 unique-local), link-local, cloud metadata and unspecified addresses,
 * unless the configuration allows the host or address (`--allow-host`, `HARVESTER_ALLOW_HOSTS`: host names, IPs or
 * CIDR ranges). It plugs into `HttpFetcher`'s `guard` hook, which runs before every request and every redirect hop,
 * so a public URL redirecting to a private address is refused too.
 *
 * What it adds beyond Node: the address classifier (`classifyAddress`, pure, IPv4-mapped IPv6 included), every
 * resolved address checked (`dns.lookup` with `all: true`), and the same check as a socket `lookup` for undici
 * (`connectLookup`) so the address actually connected to is the one that was checked (no DNS-rebinding window).
 *
 * `guardNow` answers at once for `HttpFetcher`'s callback lane: an allowed host or an IP literal is decided on the
 * spot; a host name the guard let through in the last `VERDICT_TTL` passes without a new DNS lookup (a lookup per
 * request cost more than the request). That shortcut never lets a blocked address be reached: the socket's own
 * lookup (`connectLookup`) still refuses it, the request then failing as a `TransportError` (code `EBLOCKED`).
 */
import { RequestBlocked } from "@spindle/core/HttpFetcher"
import { Config, Effect, Layer, Option } from "effect"
import type { LookupAddress, LookupOptions } from "node:dns"
import { lookup } from "node:dns"
import { BlockList, isIP } from "node:net"

export type AddressCategory = "loopback" | "private" | "link-local" | "metadata" | "unspecified"

const ranges: ReadonlyArray<readonly [AddressCategory, "ipv4" | "ipv6", string, number]> = [
  ["unspecified", "ipv4", "0.0.0.0", 8],
  ["loopback", "ipv4", "127.0.0.0", 8],
  ["private", "ipv4", "10.0.0.0", 8],
  ["private", "ipv4", "172.16.0.0", 12],
  ["private", "ipv4", "192.168.0.0", 16],
  ["private", "ipv4", "100.64.0.0", 10],
  ["link-local", "ipv4", "169.254.0.0", 16],
  ["unspecified", "ipv6", "::", 128],
  ["loopback", "ipv6", "::1", 128],
  ["private", "ipv6", "fc00::", 7],
  ["link-local", "ipv6", "fe80::", 10]
]

const metadataAddresses: ReadonlyArray<readonly [string, "ipv4" | "ipv6"]> = [
  ["169.254.169.254", "ipv4"],
  ["169.254.170.2", "ipv4"],
  ["fd00:ec2::254", "ipv6"]
]

/** Host names of cloud metadata services, refused before any resolution. */
export const metadataHostNames: ReadonlySet<string> = new Set(["metadata.google.internal", "metadata"])

const blockLists = (() => {
  const metadata = new BlockList()
  for (const [address, family] of metadataAddresses) metadata.addAddress(address, family)
  const byCategory = new Map<AddressCategory, BlockList>()
  for (const [category, family, network, prefix] of ranges) {
    const list = byCategory.get(category) ?? new BlockList()
    list.addSubnet(network, prefix, family)
    byCategory.set(category, list)
  }
  return { metadata, byCategory }
})()

/** `::ffff:10.0.0.1` (and `::ffff:a00:1`) -> `10.0.0.1`; other addresses unchanged. */
const unmapIPv4 = (address: string): string => {
  const lower = address.toLowerCase()
  const dotted = /^(?:0{0,4}:){0,4}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower)
  if (dotted !== null) return dotted[1]!
  const hex = /^(?:0{0,4}:){0,4}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower)
  if (hex !== null) {
    const high = parseInt(hex[1]!, 16)
    const low = parseInt(hex[2]!, 16)
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
  }
  return address
}

/** The reason an IP address (a string, no I/O) must not be reached; `None` for a public address or a non-IP. */
export const classifyAddress = (input: string): Option.Option<AddressCategory> => {
  const address = unmapIPv4(input.replace(/^\[|\]$/g, "").replace(/%.*$/, ""))
  const version = isIP(address)
  if (version === 0) return Option.none()
  const family = version === 4 ? "ipv4" : "ipv6"
  if (blockLists.metadata.check(address, family)) return Option.some("metadata")
  for (const [category, list] of blockLists.byCategory) {
    if (list.check(address, family)) return Option.some(category)
  }
  return Option.none()
}

/** What the configuration allows despite the rules: exact host names, exact IPs and CIDR ranges. */
export interface AllowList {
  readonly hosts: ReadonlySet<string>
  readonly addresses: BlockList
}

/** Parses allow-list entries ("api.internal", "127.0.0.1", "::1", "10.1.0.0/16"); blanks are ignored. */
export const makeAllowList = (entries: Iterable<string>): AllowList => {
  const hosts = new Set<string>()
  const addresses = new BlockList()
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase().replace(/^\[|\]$/g, "")
    if (entry.length === 0) continue
    const slash = entry.indexOf("/")
    if (slash > 0) {
      const network = entry.slice(0, slash)
      const prefix = Number(entry.slice(slash + 1))
      const version = isIP(network)
      if (version !== 0 && Number.isInteger(prefix)) {
        addresses.addSubnet(network, prefix, version === 4 ? "ipv4" : "ipv6")
        continue
      }
    }
    const version = isIP(entry)
    if (version !== 0) addresses.addAddress(entry, version === 4 ? "ipv4" : "ipv6")
    hosts.add(entry)
  }
  return { hosts, addresses }
}

const isAllowedAddress = (allow: AllowList, address: string): boolean => {
  const plain = unmapIPv4(address)
  const version = isIP(plain)
  return version !== 0 && allow.addresses.check(plain, version === 4 ? "ipv4" : "ipv6")
}

/** Why `address` (resolved from `host`) is refused under `allow`, or `None`. */
export const refusal = (allow: AllowList, host: string, address: string): Option.Option<string> => {
  if (isAllowedAddress(allow, address)) return Option.none()
  return Option.map(
    classifyAddress(address),
    (category) =>
      host === address ? `${address} is a ${category} address` : `${host} resolves to ${address}, a ${category} address`
  )
}

const hostnameOf = (url: URL): string => url.hostname.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "")

/** Every address of `host`; none when it does not resolve (the request itself will then fail to connect). */
const resolveAll = (host: string): Effect.Effect<ReadonlyArray<LookupAddress>> =>
  Effect.async<ReadonlyArray<LookupAddress>>((resume) => {
    lookup(host, { all: true, verbatim: true }, (error, addresses) => {
      resume(Effect.succeed(error === null ? addresses : []))
    })
  })

/** Checks one URL: the host name, then every address it resolves to. DNS failures pass (the request will fail). */
export const check = (allow: AllowList, url: URL): Effect.Effect<void, RequestBlocked> => {
  const host = hostnameOf(url)
  const blocked = (reason: string) => Effect.fail(new RequestBlocked({ url: url.href, reason }))
  if (allow.hosts.has(host)) return Effect.void
  if (metadataHostNames.has(host)) return blocked(`${host} is a cloud metadata host`)
  if (isIP(host) !== 0) {
    return Option.match(refusal(allow, host, host), { onNone: () => Effect.void, onSome: blocked })
  }
  return resolveAll(host).pipe(
    Effect.flatMap((addresses) => {
      for (const { address } of addresses) {
        const reason = refusal(allow, host, address)
        if (Option.isSome(reason)) return blocked(reason.value)
      }
      return Effect.void
    })
  )
}

type LookupCallback = (
  error: NodeJS.ErrnoException | null,
  address: string | Array<LookupAddress>,
  family?: number
) => void

/**
 * A `net.connect` `lookup` that refuses blocked addresses: give it to undici (`connect: { lookup }`) so the socket
 * connects only to an address that passed the check, whatever DNS answers between the guard and the connection.
 */
export const connectLookup =
  (allow: AllowList) => (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error !== null) return callback(error, [])
      const host = hostname.toLowerCase()
      const refused = allow.hosts.has(host)
        ? undefined
        : addresses.map(({ address }) => refusal(allow, host, address)).find(Option.isSome)
      if (refused !== undefined) {
        const blocked: NodeJS.ErrnoException = new Error(`request blocked: ${refused.value}`)
        blocked.code = "EBLOCKED"
        return callback(blocked, [])
      }
      if (options.all === true) return callback(null, addresses)
      const first = addresses[0]
      return first === undefined
        ? callback(Object.assign(new Error(`no address for ${hostname}`), { code: "ENOTFOUND" }), [])
        : callback(null, first.address, first.family)
    })
  }

/** The allow-list from `HARVESTER_ALLOW_HOSTS` (comma-separated), empty by default. */
export const AllowHostsConfig = Config.array(Config.string(), "HARVESTER_ALLOW_HOSTS").pipe(
  Config.withDefault([] as ReadonlyArray<string>)
)

/** How long a host name the guard let through passes `guardNow` without a new lookup. */
export const VERDICT_TTL_MILLIS = 10_000
/** Host names remembered at most (the oldest is forgotten first). */
const MAX_VERDICTS = 10_000

/** A guard allowing exactly these entries: the `HttpFetcher` hooks and the matching socket lookup. */
export const make = (entries: Iterable<string>) => {
  const allow = makeAllowList(entries)
  /** Host name → until when it passes `guardNow` (epoch ms). */
  const passed = new Map<string, number>()
  const remember = (host: string) => {
    passed.delete(host)
    passed.set(host, Date.now() + VERDICT_TTL_MILLIS)
    if (passed.size > MAX_VERDICTS) passed.delete(passed.keys().next().value!)
  }
  return {
    allow,
    /** The `HttpFetcher` guard hook. */
    guard: (url: URL) => {
      const host = hostnameOf(url)
      const checked = check(allow, url)
      return isIP(host) !== 0 || allow.hosts.has(host)
        ? checked
        : Effect.zipRight(checked, Effect.sync(() => remember(host)))
    },
    /** The `HttpFetcher` `guardNow` hook: `true` only when `guard` would let the URL through without waiting. */
    guardNow: (url: URL): boolean => {
      const host = hostnameOf(url)
      if (allow.hosts.has(host)) return true
      if (isIP(host) !== 0) return Option.isNone(refusal(allow, host, host))
      return (passed.get(host) ?? 0) > Date.now()
    },
    /** For undici's `connect: { lookup }`. */
    lookup: connectLookup(allow)
  } as const
}

export class SsrfGuard extends Effect.Service<SsrfGuard>()("spindle/SsrfGuard", {
  effect: Effect.map(Effect.orDie(AllowHostsConfig), make)
}) {
  /** A guard allowing exactly these entries (tests, the CLI's `--allow-host`), ignoring the environment. */
  static layer(entries: Iterable<string>): Layer.Layer<SsrfGuard> {
    return Layer.succeed(SsrfGuard, new SsrfGuard(make(entries)))
  }
}
