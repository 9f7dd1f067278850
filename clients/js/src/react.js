// React hooks over a zeroservices-client (React is a peer dependency).
import { useEffect, useState } from "react";

/**
 * The resources of `collection` matching `where`, sorted and cut to `limit`, kept live.
 * Re-subscribes when the query changes; unsubscribes on unmount.
 */
export function useLiveQuery(client, collection, { where = {}, sort, limit } = {}) {
  const [items, setItems] = useState([]);
  const key = JSON.stringify([collection, where, sort, limit]);
  useEffect(() => {
    const q = client.liveQuery(collection, { where, sort, limit }, setItems);
    return () => q.close();
    // `key` stands for the query's value (objects are compared by content).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, key]);
  return items;
}

/** One resource, kept live: `undefined` while loading, `null` once deleted or missing. */
export function useResource(client, collection, id) {
  const [resource, setResource] = useState(undefined);
  useEffect(() => {
    let alive = true;
    const load = () =>
      client
        .collection(collection)
        .get(id)
        .then((r) => alive && setResource(r))
        .catch(() => alive && setResource(null));
    load();
    const stop = client.subscribe([collection], (msg) => {
      if (msg.type === "resync") return load();
      const d = msg.data || {};
      if (d.resource_id !== id) return;
      if (d.action === "delete") setResource(null);
      else if (d.resource_data) setResource({ resource_id: id, resource_data: d.resource_data });
    });
    return () => {
      alive = false;
      stop();
    };
  }, [client, collection, id]);
  return resource;
}
