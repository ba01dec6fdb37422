/**
 * main — the harvester's layers, composed in one place: the database (SQLite file or PostgreSQL, migrated), the
 * engine (`Jobs`: claiming, fetching through the core, storing), and the HTTP API on Node.
 *
 * Shutdown is the layers' finalizers in reverse order of construction: the HTTP server drains first, then the
 * engine stops claiming, lets in-flight requests finish within the grace period, interrupts the rest and releases
 * their leases, then the database closes.
 */
import { Config, Layer, Option } from "effect"
import * as AppConfig from "./Config.js"
import type { ServerSettings } from "./Config.js"
import * as Db from "./Db/Db.js"
import * as Server from "./Http/Server.js"
import { EngineSettingsConfig } from "./Jobs/Engine.js"
import { Jobs } from "./Jobs/Jobs.js"

/** Every configuration key of the process (the app's and the engine's), read and validated in one pass. */
export const configuration = Config.all({ app: AppConfig.all, engine: EngineSettingsConfig })

/** The configured database (DATABASE_URL, else HARVESTER_DB_PATH), or the SQLite file `db` when given. */
export const databaseLayer = (db: Option.Option<string>) =>
  Option.match(db, { onNone: () => Db.layer, onSome: (path) => Db.layerSqlite(path) })

/** The engine on its database. */
export const engineLayer = (db: Option.Option<string>) => Jobs.Default.pipe(Layer.provide(databaseLayer(db)))

/** `harvester serve`: the API over the engine over the configured database. */
export const serveLayer = (settings: ServerSettings) =>
  Server.layer(settings).pipe(Layer.provide(engineLayer(Option.none())))
