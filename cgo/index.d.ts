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
   * stored as strings and read back as strings. */
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
     * prefix) and list() in O(log n + k). A creation option: when left out,
     * joining an existing store takes whatever it has; when given and
     * different from the store's, openKv throws KVOptionsConflictError.
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
    /** xk6-kv fork compatibility: accepted, without effect (one warning). */
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
    | "StoreError";

  /** What promises reject with: an object whose prototype is
   * Error.prototype, so `String(err)` reads "Name: message". */
  export interface KVError extends Error {
    name: KVErrorName;
    message: string;
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
    /** Replaces the value with newValue only if it equals oldValue (compared
     * by their encoding); oldValue null or undefined means "only if absent". */
    compareAndSwap(key: string, oldValue: any, newValue: any): Promise<boolean>;
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
  }

  /** Opens or joins a store. Only in the init context (top level of the
   * script); elsewhere it throws InitContextError. Bad options throw
   * InvalidOptionsError naming the option. */
  export function openKv(options?: OpenKvOptions): KV;
}
