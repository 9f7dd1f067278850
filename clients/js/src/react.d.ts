import type { Client, LiveQueryOptions, Resource } from "./index.js";

export function useLiveQuery<T = Record<string, unknown>>(
  client: Client,
  collection: string,
  options?: LiveQueryOptions,
): Resource<T>[];

export function useResource<T = Record<string, unknown>>(
  client: Client,
  collection: string,
  id: string,
): Resource<T> | null | undefined;
