// Wire shapes of the chat API (docs/rest.md, docs/events.md). Field names are the server's.

export type Role = "customer" | "contractor" | "admin";
export type MessageStatus = "sent" | "delivered" | "read";

export interface User {
  _id: string;
  name: string;
  role: Role;
  avatar?: string | null;
}

export interface Participant {
  _id: string;
  name: string;
  avatar: string | null;
  role: Role | null;
  online: boolean;
}

export interface Message {
  _id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  receiverId: string;
  messageType: "text" | "image" | "file" | "system";
  content: string;
  status: MessageStatus;
  clientMessageId: string | null;
  timestamp: string;
  createdAt: string;
}

export interface Conversation {
  _id: string;
  participants: Participant[];
  jobId: string | null;
  lastMessage: Message | null;
  unreadCount: number;
  createdAt: string;
  updatedAt: string;
}

/** Every acknowledgement: success with data, or an error with a stable code. */
export type Ack<T> =
  | { status: "success"; data: T }
  | { status: "error"; code: ErrorCode; message: string; retryAfterMs?: number };

export type ErrorCode =
  | "validation"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "payload_too_large"
  | "rate_limited"
  | "unavailable"
  | "internal"
  | "timeout";

export interface SyncedConversation {
  conversationId: string;
  messages: Message[];
  hasMore: boolean;
}

export interface UserStatus {
  userId: string;
  online: boolean;
  lastSeen: string | null;
}
