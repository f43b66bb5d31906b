/** The refresh token's cookie (API.md, "Cookies"): its name and the one path it is sent to. */
export const REFRESH_COOKIE = 'refresh_token'
/** The cookie goes only to /auth routes: never to the API calls that carry access tokens. */
export const REFRESH_COOKIE_PATH = '/auth'
