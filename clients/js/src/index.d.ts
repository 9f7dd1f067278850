export interface Resource<T = Record<string, unknown>> {
  resource_id: string;
  resource_data: T;
}

export class ZeroServicesError extends Error {
  status: number;
  code: string;
}

export interface ListQuery {
  where?: Record<string, unknown>;
  sort?: string;
  skip?: number;
  limit?: number;
  fields?: string;
}

export interface CollectionClient<T = Record<string, unknown>> {
  list(query?: ListQuery): Promise<{ items: Resource<T>[]; total: number }>;
  get(id: string): Promise<Resource<T>>;
  create(data: T, id?: string, opts?: ChangeOptions): Promise<Resource<T>>;
  patch(id: string, update: Record<string, unknown>, opts?: ChangeOptions): Promise<Resource<T>>;
  delete(id: string, opts?: ChangeOptions): Promise<void>;
  action(action: string, args?: unknown, id?: string, opts?: ChangeOptions): Promise<unknown>;
}

/** Options of a change. */
export interface ChangeOptions {
  /** Sent again with the same key (1-255 visible ASCII), the change answers its first answer and changes nothing. */
  idempotencyKey?: string;
}

export interface RealtimeMessage {
  type: string;
  topic?: string;
  data?: Record<string, unknown>;
  node_id?: string | null;
  reason?: string;
}

export interface LiveQueryOptions {
  where?: Record<string, unknown>;
  sort?: string;
  limit?: number;
}

export interface LiveQuery<T = Record<string, unknown>> {
  id: string;
  items(): Resource<T>[];
  error(): { code: string; message: string } | null;
  close(): void;
}

export interface ClientOptions {
  token?: string;
  WebSocket?: unknown;
  fetch?: typeof fetch;
  backoff?: { min: number; max: number };
}

export interface Client {
  collection<T = Record<string, unknown>>(name: string): CollectionClient<T>;
  subscribe(topics: string | string[], onEvent: (msg: RealtimeMessage) => void): () => void;
  liveQuery<T = Record<string, unknown>>(
    collection: string,
    options?: LiveQueryOptions,
    onChange?: (items: Resource<T>[]) => void,
  ): LiveQuery<T>;
  setToken(token: string): void;
  close(): void;
}

export function createClient(url: string, options?: ClientOptions): Client;
export function sortComparator(sort?: string): (a: Resource, b: Resource) => number;
