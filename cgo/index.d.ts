// TypeScript declarations for k6/x/kv, the libshmkv extension for k6.
// docs/api.md describes every call in full.
//
// Use them by adding this file to your project (for example as
// types/k6-x-kv.d.ts, listed under "include" or "typeRoots" in tsconfig.json).

declare module "k6/x/kv" {
  /** "disk": a regular file that outlives the processes. "memory": a POSIX
   * shared-memory object in /dev/shm, removed when its last process exits. */
  export type Backend = "disk" | "memory";

  /** "json": values are JSON-encoded (the default). "string": values are
   * stored as strings and read back as strings (numbers and booleans as
   * their String() form; an ArrayBuffer or any typed array as its bytes). */
  export type Serialization = "json" | "string";

  /** A byte count: a number, or a string such as "512MiB", "16GiB", "1GB". */
  export type Size = number | string;

  export interface OpenKvOptions {
    /** Where the store lives. Default "disk". */
    backend?: Backend;
    /** Disk backend: the store file. Default "./.k6.kv". Every process
     * opening the same file shares the store. */
    path?: string;
    /** Memory backend: the store's name, 1-200 characters from
     * A-Z a-z 0-9 . _ - (the object is /dev/shm/shmkv.<name>).
     * Default "k6kv". Every process opening the same name shares the store. */
    name?: string;
    /** Default "json". Chosen per openKv call; the store keeps a kind tag
     * with every value. */
    serialization?: Serialization;
    /** Keep a key index in the store: randomKey() in O(1) (O(log n) with a
     * prefix), list() and scan() pages in O(log n + k), count() in
     * O(log n). true on a store created without it turns it on for the
     * store (the index is built once, then every process keeps it); false
     * on a tracked store joins it, tracked. Left out: whatever the store has.
     * Default false for a new store. */
    trackKeys?: boolean;
    /** Lock stripes of a new store: a power of two from 1 to 4096.
     * Default 64. Creation option, like trackKeys. */
    segments?: number;
    /** The largest size the store may grow to (address space reserved in
     * every process; disk or memory is used only as the store fills).
     * From 1 MiB to 64 TiB; default 16 GiB. Creation option. */
    reserve?: Size;
    /** The longest one call waits for the store's locks held by another
     * thread or process (locks are held for microseconds, so a long wait
     * means a stopped or frozen holder): milliseconds, or a duration string
     * such as "500ms" or "10s"; Infinity or "none" waits without a limit.
     * Default 10 s. The call then rejects with LockTimeoutError, having
     * changed nothing. Per openKv call, never compared with the store. */
    lockTimeout?: number | string;
    /** xk6-kv fork compatibility (memory backend). */
    memory?: MemoryOptions;
    /** xk6-kv fork compatibility (disk backend). */
    disk?: DiskOptions;
    /** k6 metrics. operations: true emits, for every call of this KV
     * object, xk6_kv_operations_total, xk6_kv_operation_duration,
     * xk6_kv_operation_failed, xk6_kv_errors_total (on failures) and
     * xk6_kv_empty_result (randomKey, randomKeys). Default false: no cost. */
    metrics?: { operations?: boolean };
  }

  export interface MemoryOptions {
    /** Becomes `segments`, rounded up to a power of two (at most 4096);
     * <= 0 means the default. */
    shardCount?: number;
  }

  export interface DiskOptions {
    /** Same as the top-level `path` (they must agree when both are given). */
    path?: string;
    /** Open the store read-only: every write rejects with StoreReadOnlyError. */
    readOnly?: boolean;
    /** Do not msync the file when the last process closes it. */
    noSync?: boolean;
    /** Accepted for compatibility, without effect (one warning per process). */
    timeout?: number | string;
    noGrowSync?: boolean;
    noFreelistSync?: boolean;
    preLoadFreelist?: boolean;
    freelistType?: "" | "array" | "map";
    initialMmapSize?: Size;
    mlock?: boolean;
  }

  export interface ListOptions {
    /** Only keys starting with this prefix (compared as bytes). */
    prefix?: string;
    /** At most this many entries; 0, a negative number or leaving it out
     * means no limit. */
    limit?: number;
  }

  export interface RandomKeyOptions {
    /** Only keys starting with this prefix. */
    prefix?: string;
  }

  export interface Entry<T = any> {
    key: string;
    value: T;
  }

  export interface GetOrSetResult<T = any> {
    /** The stored value: the existing one, or the one just stored. */
    value: T;
    /** true when the key already existed. */
    loaded: boolean;
  }

  export interface SwapResult<T = any> {
    /** The value replaced, or null when the key did not exist. */
    previous: T | null;
    /** true when the key existed. */
    loaded: boolean;
  }

  /** The names a rejected promise (or openKv) carries in `name`. */
  export type KVErrorName =
    | "KeyNotFoundError"
    | "InvalidOptionsError"
    | "KVOptionsConflictError"
    | "InitContextError"
    | "SerializerError"
    | "ValueParseError"
    | "ValueNumberRequiredError"
    | "StoreClosedError"
    | "StoreReadOnlyError"
    | "KeyTooLongError"
    | "ValueTooLargeError"
    | "StoreFullError"
    | "LockTimeoutError"
    | "InvalidCursorError"
    | "InvalidBackendError"
    | "InvalidSerializationError"
    | "DiskPathError"
    | "DiskStoreOpenError"
    | "SnapshotNotFoundError"
    | "SnapshotPermissionError"
    | "SnapshotIOError"
    | "SnapshotReadError"
    | "SnapshotExportError"
    | "SnapshotBudgetExceededError"
    | "BackupOptionsRequiredError"
    | "RestoreOptionsRequiredError"
    | "MetricsUnavailableError"
    | "StoreError"
    // Names that xk6-kv's declarations list and this extension never
    // rejects with; kept so that code written for xk6-kv type-checks.
    | "InternalStoreError"
    | "UnsupportedValueTypeError"
    | "UnexpectedStoreOutputError"
    | "UnknownError"
    | "BackupInProgressError"
    | "RestoreInProgressError"
    | "OperationCanceledError"
    | "DatabaseNotOpenError"
    | "SnapshotKeyMissingError"
    | "DiskStoreReadError"
    | "DiskStoreWriteError"
    | "DiskStoreDeleteError"
    | "DiskStoreExistsError"
    | "DiskStoreScanError"
    | "DiskStoreSizeError"
    | "DiskStoreIndexError"
    | "KeyListRebuildError"
    | "BucketNotFoundError";

  /** One bad entry of a batch (setMany, deleteMany). */
  export interface ManyEntryError {
    key?: string;
    /** "EmptyKey", "InvalidEntries", "SerializerError", "KeyTooLongError",
     * "ValueTooLargeError", ... */
    name: string;
    message: string;
  }

  /** What promises reject with: an object whose prototype is
   * Error.prototype, so `String(err)` reads "Name: message". */
  export interface KVError extends Error {
    name: KVErrorName;
    message: string;
    /** Batches: every entry that made the call refuse (nothing was written). */
    errors?: ManyEntryError[];
  }

  export interface GetManyItem<T = any> {
    key: string;
    exists: boolean;
    /** The value, or null when absent (a stored null is exists: true). */
    value: T | null;
  }
  export interface SetManyResult { written: number; }
  export interface DeleteManyResult { deleted: number; missing: number; }
  export interface DeleteByPrefixOptions {
    /** Non-empty. */
    prefix: string;
    /** At most this many keys (a positive integer). */
    limit: number;
  }
  export interface DeleteByPrefixResult {
    deleted: number;
    /** True when no key with the prefix was left. */
    done: boolean;
  }
  export interface ScanOptions {
    prefix?: string;
    /** Entries per page; absent or <= 0: every entry in one page. */
    limit?: number;
    /** "" or absent to start; then the previous page's cursor. */
    cursor?: string;
  }
  export interface ScanResult<T = any> {
    entries: Array<Entry<T>>;
    /** Pass it to the next call; "" when done. */
    cursor: string;
    done: boolean;
  }
  export interface ScanKeysResult {
    keys: string[];
    cursor: string;
    done: boolean;
  }
  export interface CountOptions { prefix?: string; }
  export interface RandomKeysOptions {
    prefix?: string;
    /** How many, 1 to 1,000,000. */
    count: number;
    /** Default true: distinct keys (every match when fewer match). */
    unique?: boolean;
  }
  export interface PopRandomOptions {
    prefix?: string;
  }
  export interface PopRandomManyOptions {
    prefix?: string;
    /** How many at most, 1 to 1,000,000. */
    count: number;
  }
  /** What a claim asks for. */
  export interface ClaimOptions {
    /** A label kept with the lease (diagnostics, shmkv-dump), at most 256
     * UTF-8 bytes. */
    owner?: string;
    /** Lease length in ms, above 0 and at most 86,400,000 (24 h); default
     * 30,000. Fractions round up. */
    ttl?: number;
    /** claimRandom(Many): only keys that start with it. claimKey takes it
     * (as xk6-kv's type does) and does not use it. */
    prefix?: string;
  }
  export interface ClaimRandomOptions extends ClaimOptions {}
  export interface ClaimRandomManyOptions extends ClaimRandomOptions {
    /** How many at most, 1 to 1,000,000. */
    count: number;
  }
  /** xk6-kv's name for ClaimRandomManyOptions. */
  export type ClaimManyOptions = ClaimRandomManyOptions;
  export interface ClaimKeysOptions {
    owner?: string;
    ttl?: number;
    /** Stop at the first key that cannot be claimed: the claims taken
     * before it are released, and the result names that key alone.
     * Default false. */
    allOrNothing?: boolean;
  }
  /** claimKeys' answer: each key given, claimed or else busy (a live claim
   * holds it) or missing (not there). */
  export interface ClaimKeysResult<T = any> {
    claimed: Array<Claim<T>>;
    busy: string[];
    missing: string[];
  }
  /** "ClaimNotUpdated": the ref named no live claim (released, completed,
   * ran out, taken over, key deleted). */
  export type ClaimBatchFailureName = "ClaimNotUpdated" | string;
  /** A ref of releaseClaims, completeClaims or renewClaims that named no
   * live claim. */
  export interface ClaimBatchFailure {
    /** Its place in the refs given. */
    index: number;
    /** Its id as given (String(token) when it had none). */
    id: string;
    key: string;
    name: ClaimBatchFailureName;
    message: string;
  }
  export interface ReleaseClaimsResult { attempted: number; released: number; failed: ClaimBatchFailure[]; }
  export interface CompleteClaimsResult { attempted: number; completed: number; failed: ClaimBatchFailure[]; }
  export interface RenewClaimsResult { attempted: number; renewed: number; failed: ClaimBatchFailure[]; }
  /** What release, complete and renew take: a Claim, or these fields of
   * one. A ref names a claim of the store it came from. */
  export interface ClaimRef {
    /** String(token). When present and different, the ref names no claim. */
    id?: string;
    key: string;
    /** The fencing token: unique in the store, larger than every token
     * the store issued before (below 2^53). */
    token: number;
  }
  /** A live claim, as claimKey, claimKeys, claimRandom and
   * claimRandomMany hand it out. */
  export interface Claim<T = any> {
    id: string;
    key: string;
    token: number;
    /** The owner option, when given. */
    owner?: string;
    /** When the lease ends, in Unix ms. */
    expiresAt: number;
    /** The key and its value as claimed (read in the claim's own step). */
    entry: Entry<T>;
  }
  export interface CompleteClaimOptions {
    /** Default true: the key is deleted with its claim (an item used up);
     * false keeps it, claimable again. */
    deleteKey?: boolean;
  }
  export interface RenewClaimOptions {
    /** The lease's new length from now, in ms (as ClaimOptions.ttl). */
    ttl?: number;
  }
  export interface CompareDetailedOptions {
    /** On a mismatch with the key present, return its value as current. */
    includeCurrentOnMismatch?: boolean;
  }
  export interface CompareAndSwapDetailedSuccess { swapped: true; reason: "swapped"; }
  export interface CompareAndSwapDetailedMismatch<T = any> { swapped: false; reason: "mismatch"; existed: boolean; current?: T; }
  export type CompareAndSwapDetailedResult<T = any> = CompareAndSwapDetailedSuccess | CompareAndSwapDetailedMismatch<T>;
  export interface CompareAndDeleteDetailedSuccess { deleted: true; reason: "deleted"; }
  export interface CompareAndDeleteDetailedMismatch<T = any> { deleted: false; reason: "mismatch"; existed: boolean; current?: T; }
  export type CompareAndDeleteDetailedResult<T = any> = CompareAndDeleteDetailedSuccess | CompareAndDeleteDetailedMismatch<T>;

  // xk6-kv's names for types declared here under other names.
  export type OpenKvMetricsOptions = NonNullable<OpenKvOptions["metrics"]>;
  export type ListKeysOptions = ListOptions;
  export type ScanKeysOptions = ScanOptions;
  export type ImportCSVResult = ImportResult;
  export type ImportJSONLResult = ImportResult;
  export type ExportCSVResult = ExportResult;
  export type ExportJSONLResult = ExportResult;
  export interface AllocationStatsOptions { prefix?: string; }

  export interface ImportCSVOptions {
    /** The CSV file; a relative path is taken from the directory k6 runs in. */
    fileName: string;
    /** The column holding the key: a header name, or with hasHeader false
     * a field index ("0" or 0). The key is trimmed of spaces. */
    keyColumn: string | number;
    /** One character; default ",". */
    delimiter?: string;
    /** Default true: the first record names the columns. */
    hasHeader?: boolean;
    /** Import at most this many rows; 0 or absent: all. */
    limit?: number;
    /** Rows per setMany batch, 1 to 10000; default 1000. */
    batchSize?: number;
  }
  export interface ImportJSONLOptions {
    /** The JSON Lines file: one {"key": "...", "value": any} per line. */
    fileName: string;
    limit?: number;
    batchSize?: number;
  }
  export interface ImportResult {
    /** Entries written. */
    imported: number;
    fileName: string;
    bytesRead: number;
  }
  export interface ExportJSONLOptions {
    fileName: string;
    /** Only keys with this prefix. */
    prefix?: string;
    /** At most this many entries; 0 or absent: all. */
    limit?: number;
  }
  export interface ExportCSVOptions extends ExportJSONLOptions {
    /** The top-level fields of the values (JSON objects) to write, one
     * column each; required. */
    columns: string[];
    /** One character; default ",". */
    delimiter?: string;
    /** Default true: the key is the first column, "key". */
    includeKey?: boolean;
  }
  export interface ExportResult {
    exported: number;
    fileName: string;
    bytesWritten: number;
  }
  export interface BackupOptions {
    /** Where the backup goes (required): written to a temporary file
     * beside it and renamed over it once complete. */
    fileName: string;
    /** Default false: one consistent moment, every writer paused for the
     * copy. true: no global pause, consistent per segment only. */
    allowConcurrentWrites?: boolean;
  }
  export interface BackupSummary {
    totalEntries: number;
    /** Size of the backup file. */
    bytesWritten: number;
    bestEffort: boolean;
    /** Present when bestEffort: what such a backup may hold. */
    warning?: string;
    /** How long writers waited: all of them (default), or those of one
     * segment at most (bestEffort). */
    pauseMs: number;
    fileName: string;
  }
  export interface RestoreOptions {
    /** A backup, or a disk store's file copied while closed (required). */
    fileName: string;
    /** Refuse (SnapshotBudgetExceededError, nothing changed) a backup of
     * more entries; 0, negative or absent: no limit. */
    maxEntries?: number;
    /** Refuse a backup whose keys and values take more bytes; 0, negative
     * or absent: no limit. */
    maxBytes?: number;
  }
  export interface RestoreSummary {
    totalEntries: number;
    /** Bytes of the keys and values loaded. */
    totalBytes: number;
    fileName: string;
  }
  export interface ValidateCSVOptions {
    fileName: string;
    /** When given, every row's key is checked as importCSV would. */
    keyColumn?: string | number;
    delimiter?: string;
    hasHeader?: boolean;
    /** Check at most this many rows; 0 or absent: all. */
    limit?: number;
  }
  export interface ValidateJSONLOptions {
    fileName: string;
    limit?: number;
  }
  export interface ValidateCSVResult {
    valid: boolean;
    /** Data rows checked (the header not counted). */
    rows: number;
    bytesRead: number;
    /** True when the whole file was read (false: stopped at limit or at an error). */
    checkedAll: boolean;
    /** The first problem: row (the header is row 1), the line it starts on,
     * the error name importCSV would reject with, and a message. */
    firstError?: { row: number; line: number; name: string; message: string };
  }
  export interface ValidateJSONLResult {
    valid: boolean;
    records: number;
    bytesRead: number;
    checkedAll: boolean;
    firstError?: { line: number; name: string; message: string };
  }
  /** What stats() resolves to. */
  export interface KVStats {
    backend: Backend;
    serialization: Serialization;
    trackKeys: boolean;
    /** Keys in the store. */
    count: number;
    /** Claims on keys: live ones, and those whose lease ran out and that
     * nobody claimed again (their keys are claimable). null through a
     * read-only handle, which cannot take the locks they are counted under. */
    claims: { live: number; expired: number } | null;
    /** With the key index: its count of keys (keysList and ost: the key
     * array and the ordered index share one count), the tables' count
     * (keysMap), and whether they agree. null without the index. */
    index: { enabled: boolean; keysList: number; keysMap: number; ost: number; consistent: boolean } | null;
    /** Disk backend: the file, its size, and whether this handle is
     * read-only. null for a memory store. */
    disk: { path: string; sizeBytes: number; readOnly: boolean } | null;
    /** libshmkv's own counters. */
    store: {
      /** Processes attached to the store now. */
      processes: number;
      segments: number;
      /** Bytes of the region handed out to data and structures. */
      usedBytes: number;
      /** Bytes of the file (or /dev/shm object) not in use. */
      freeBytes: number;
      /** Size of the file (or /dev/shm object). */
      fileBytes: number;
      /** The largest size the store may grow to. */
      reserveBytes: number;
      formatVersion: number;
      libraryVersion: string;
    };
  }
  export interface AllocationStats {
    prefix: string;
    /** Keys with the prefix. */
    total: number;
    /** Keys not under a live claim (a key whose lease ran out is
     * claimable): total - claimedLive. The three claim counts are null
     * through a read-only handle (see KVStats.claims). */
    claimable: number | null;
    /** Keys with the prefix under a live claim. */
    claimedLive: number | null;
    /** Keys with the prefix whose claim's lease ran out (not claimed
     * again since). */
    claimedExpired: number | null;
    backend: Backend;
    trackKeys: boolean;
  }

  /** A store. Every method returns a promise, settled before the call
   * returns; keys are non-empty strings of at most 16384 UTF-8 bytes. */
  export interface KV {
    /** Stores a value, replacing any previous one; resolves to the value. */
    set<T = any>(key: string, value: T): Promise<T>;
    /** Resolves to the value; rejects with KeyNotFoundError when absent. */
    get<T = any>(key: string): Promise<T>;
    /** Removes a key; resolves to true whether or not it existed. */
    delete(key: string): Promise<boolean>;
    /** Whether the key exists. */
    exists(key: string): Promise<boolean>;
    /** Entries sorted by key (byte order). */
    list<T = any>(options?: ListOptions): Promise<Array<Entry<T>>>;
    /** Removes every key; resolves to true. */
    clear(): Promise<boolean>;
    /** Number of keys. */
    size(): Promise<number>;
    /** A key chosen uniformly (among those with the prefix); "" when none. */
    randomKey(options?: RandomKeyOptions): Promise<string>;
    /** Rebuilds the key index from the data (a no-op without trackKeys);
     * resolves to true. O(n), and writers wait meanwhile. */
    rebuildKeyList(): Promise<boolean>;
    /** Releases this KV object: its later calls reject with
     * StoreClosedError. The store closes when its last user in the process
     * does (or when k6 exits). Safe to call more than once; resolves to true. */
    close(): Promise<boolean>;

    /** Adds delta (an integer) to the integer stored at key (a missing key
     * counts as 0); resolves to the new value. Rejects with
     * ValueNumberRequiredError for a bad delta and ValueParseError when the
     * stored value is not an integer or the sum overflows 64 bits. */
    incrementBy(key: string, delta: number): Promise<number>;
    /** Replaces the value with newValue only if it equals oldValue (JSON
     * compared as JSON: object key order does not matter); oldValue null or
     * undefined means "only if absent". */
    compareAndSwap(key: string, oldValue: any, newValue: any): Promise<boolean>;
    /** compareAndSwap with the reason of a mismatch. */
    compareAndSwapDetailed<T = any>(key: string, oldValue: any, newValue: any,
      options?: CompareDetailedOptions): Promise<CompareAndSwapDetailedResult<T>>;
    /** Stores the value only if the key is absent; true when stored. */
    setIfAbsent(key: string, value: any): Promise<boolean>;
    /** Returns the existing value, or stores this one and returns it. */
    getOrSet<T = any>(key: string, value: T): Promise<GetOrSetResult<T>>;
    /** Stores the value and returns the one it replaced. */
    swap<T = any>(key: string, value: T): Promise<SwapResult<T>>;
    /** Deletes the key; true when it existed. */
    deleteIfExists(key: string): Promise<boolean>;
    /** Deletes the key only if its value equals oldValue (null is a value
     * here); true when deleted. */
    compareAndDelete(key: string, oldValue: any): Promise<boolean>;
    /** compareAndDelete with the reason of a mismatch. */
    compareAndDeleteDetailed<T = any>(key: string, oldValue: any,
      options?: CompareDetailedOptions): Promise<CompareAndDeleteDetailedResult<T>>;

    /** Reads many keys as of one instant (every process's batches and
     * writes whole or not at all); results in the order of keys. As on
     * xk6-kv the array and its items are Go data seen from JS: read,
     * iterate, spread them; copy (`r.map((x) => ({...x}))`) to change them. */
    getMany<T = any>(keys: string[]): Promise<Array<GetManyItem<T>>>;
    /** Writes every pair or none, at once for every process. Rejects with
     * InvalidOptionsError (errors[] naming each bad entry) and writes
     * nothing when an entry is bad. */
    setMany<T = any>(entries: Record<string, T>): Promise<SetManyResult>;
    /** Deletes every key or none, at once for every process. */
    deleteMany(keys: string[]): Promise<DeleteManyResult>;
    /** Deletes up to limit keys with the prefix, at once. */
    deleteByPrefix(options: DeleteByPrefixOptions): Promise<DeleteByPrefixResult>;
    /** A page of entries in key (byte) order; every key that exists for the
     * whole scan is returned once, whoever writes meanwhile. */
    scan<T = any>(options?: ScanOptions): Promise<ScanResult<T>>;
    /** scan() without values. */
    scanKeys(options?: ScanOptions): Promise<ScanKeysResult>;
    /** Keys in key order, without values. */
    listKeys(options?: ListOptions): Promise<string[]>;
    /** Number of keys with the prefix (count() is size()). */
    count(options?: CountOptions): Promise<number>;
    /** count keys drawn uniformly among those with the prefix. */
    randomKeys(options: RandomKeysOptions): Promise<string[]>;

    /** Writes the rows of a CSV file, each as an object of its cells
     * (strings) under its key column. The whole file is checked first: a
     * bad file rejects (naming the file and line) and writes nothing. */
    importCSV(options: ImportCSVOptions): Promise<ImportResult>;
    /** Writes the records of a JSON Lines file; checked whole first, as
     * importCSV. */
    importJSONL(options: ImportJSONLOptions): Promise<ImportResult>;
    /** Writes entries (JSON objects) as CSV rows, in key order. */
    exportCSV(options: ExportCSVOptions): Promise<ExportResult>;
    /** Writes entries as {"key", "value"} lines, in key order. */
    exportJSONL(options: ExportJSONLOptions): Promise<ExportResult>;
    /** Checks a CSV file as importCSV would, writing nothing; a bad file
     * resolves with valid false and firstError. */
    validateCSV(options: ValidateCSVOptions): Promise<ValidateCSVResult>;
    /** Checks a JSON Lines file as importJSONL would, writing nothing. */
    validateJSONL(options: ValidateJSONLOptions): Promise<ValidateJSONLResult>;
    /** Copies the whole store to a file that is itself a closed store
     * (readable by shmkv-dump and restore()). */
    backup(options: BackupOptions): Promise<BackupSummary>;
    /** Replaces the store's contents with a backup's: checked whole and
     * held against the guards before anything changes. */
    restore(options: RestoreOptions): Promise<RestoreSummary>;
    /** Removes and returns a key drawn among those with the prefix that no
     * live claim holds; null when there is none. */
    popRandom<T = any>(options?: PopRandomOptions): Promise<Entry<T> | null>;
    /** popRandom up to count times: the entries removed ([] when none). */
    popRandomMany<T = any>(options: PopRandomManyOptions): Promise<Array<Entry<T>>>;
    /** Claims a key drawn among those with the prefix that no live claim
     * holds (a key whose lease ran out is claimable); null when none. No
     * other claim on the key succeeds, in any process, until the claim is
     * released, completed or runs out. */
    claimRandom<T = any>(options?: ClaimRandomOptions): Promise<Claim<T> | null>;
    /** claimRandom up to count times: distinct keys ([] when none). */
    claimRandomMany<T = any>(options: ClaimRandomManyOptions): Promise<Array<Claim<T>>>;
    /** Claims the key; null when it does not exist or a live claim holds it. */
    claimKey<T = any>(key: string, options?: ClaimOptions): Promise<Claim<T> | null>;
    /** Claims each key in order (non-empty, each given once), sorting the
     * others into busy and missing. */
    claimKeys<T = any>(keys: string[], options?: ClaimKeysOptions): Promise<ClaimKeysResult<T>>;
    /** Ends the claim, the key claimable again; false when the ref names no
     * live claim (released, completed, ran out, taken over, key deleted). */
    releaseClaim(ref: ClaimRef): Promise<boolean>;
    /** releaseClaim for each ref, in order; the refs that named no live
     * claim are in failed. */
    releaseClaims(refs: ClaimRef[]): Promise<ReleaseClaimsResult>;
    /** Ends the claim as done, deleting the key unless deleteKey is false;
     * false when the ref names no live claim (nothing is deleted then). */
    completeClaim(ref: ClaimRef, options?: CompleteClaimOptions): Promise<boolean>;
    /** completeClaim for each ref, in order; the refs that named no live
     * claim are in failed. */
    completeClaims(refs: ClaimRef[], options?: CompleteClaimOptions): Promise<CompleteClaimsResult>;
    /** Extends the live claim to ttl from now; false when the ref names no
     * live claim. */
    renewClaim(ref: ClaimRef, options?: RenewClaimOptions): Promise<boolean>;
    /** renewClaim for each ref, in order; the refs that named no live
     * claim are in failed. */
    renewClaims(refs: ClaimRef[], options?: RenewClaimOptions): Promise<RenewClaimsResult>;
    /** Counters of the store, now. */
    stats(): Promise<KVStats>;
    /** Keys with a prefix, and how many are claimable. */
    allocationStats(options?: AllocationStatsOptions): Promise<AllocationStats>;
    /** Emits the store's gauges (xk6_kv_keys, ...) into k6's metrics, as of
     * now; only while a VU runs (else MetricsUnavailableError). */
    reportStats(): Promise<void>;
  }

  /** Opens or joins a store. Only in the init context (top level of the
   * script); elsewhere it throws InitContextError. Bad options throw
   * InvalidOptionsError naming the option. */
  export function openKv(options?: OpenKvOptions): KV;
}
