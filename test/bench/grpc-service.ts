import type { MethodDefinition, ServiceDefinition, handleUnaryCall } from '@grpc/grpc-js';
import { GRPC_METHOD } from './fixtures.js';

/**
 * A one-method unary service with JSON messages, defined by hand: the benchmark measures the
 * interceptors, not protobuf, and needs no .proto file. The servers use it; the generators frame the same JSON by hand.
 */
export interface ItemRequest {
  readonly id: string;
}

export interface Item {
  readonly id: string;
  readonly name: string;
}

export const serializeJson = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

export const parseItemRequest = (buffer: Buffer): ItemRequest => JSON.parse(buffer.toString('utf8')) as ItemRequest;
export const parseItem = (buffer: Buffer): Item => JSON.parse(buffer.toString('utf8')) as Item;

const getItem: MethodDefinition<ItemRequest, Item> = {
  path: GRPC_METHOD,
  requestStream: false,
  responseStream: false,
  requestSerialize: serializeJson,
  requestDeserialize: parseItemRequest,
  responseSerialize: serializeJson,
  responseDeserialize: parseItem,
};

export interface ItemsImplementation {
  GetItem: handleUnaryCall<ItemRequest, Item>;
  [name: string]: handleUnaryCall<ItemRequest, Item>;
}

export const ITEMS_SERVICE: ServiceDefinition<ItemsImplementation> = { GetItem: getItem };

/** The request every generator sends, and the name in every answer. */
export const ITEM_REQUEST: ItemRequest = { id: '42' };
export const ITEM_NAME = 'bench item';

/** A gRPC length-prefixed message: 1 byte "not compressed", 4 bytes length, the message. */
export function grpcFrame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}
