import type * as grpc from '@grpc/grpc-js';
import express, { type Express } from 'express';
import { HTTP_ROUTE } from './fixtures.js';
import { ITEM_NAME, type Item, type ItemRequest } from './grpc-service.js';

/** An Express 5 app with case-sensitive routing (fluxguard refuses strict routing): what every HTTP variant starts from. */
export function strictApp(): Express {
  const app = express();
  app.set('case sensitive routing', true);
  return app;
}

/** The one route every HTTP variant serves, identical in all: only what runs before it differs. */
export function mountRoute(app: Express): void {
  app.get(HTTP_ROUTE, (req, res) => {
    res.json({ id: req.params.id, name: ITEM_NAME });
  });
}

/** The one gRPC method every variant serves. */
export function getItem(call: grpc.ServerUnaryCall<ItemRequest, Item>, callback: grpc.sendUnaryData<Item>): void {
  callback(null, { id: call.request.id, name: ITEM_NAME });
}
